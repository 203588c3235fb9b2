"""Connectors: the adapters behind :mod:`carehook.workflows.ports` (FHIR EHR, vendor APIs,
notifications, webhook destinations), each on an injected ``httpx.AsyncClient``."""
