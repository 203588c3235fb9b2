"""The HTTP edge: ingress routes, health, metrics (and later the admin API and dashboard)."""
