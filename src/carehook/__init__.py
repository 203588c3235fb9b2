"""carehook: the secure, durable front door for clinical-AI webhooks."""

__version__ = "0.1.0"
