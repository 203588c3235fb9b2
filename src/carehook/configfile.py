"""Writing a first ``carehook.toml``: one source per built-in vendor, fresh random secrets."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

_HEADER = """\
# carehook configuration, written by `carehook init` / the first `carehook serve`.
# Each [sources.<name>] is one endpoint POST /webhooks/<name>. Give the secrets to the vendor
# (or replace them with the vendor's), or use `env:VARNAME` to read one from the environment.
# Keys per source: vendor, secrets, allow_ips, trusted_proxies, max_body_bytes,
# tolerance_seconds, public_path, retention_days (see README.md).

data_dir = "."

[storage]
# url = "postgresql://postgres@127.0.0.1:5432/carehook"   # default: SQLite in data_dir

[server]
host = "127.0.0.1"
port = 8000
"""

#: (source name, vendor) written into a fresh config
DEFAULT_SOURCES = (
    ("abridge", "abridge"),
    ("openevidence", "openevidence"),
    ("nabla", "nabla"),
    ("healthie", "healthie"),
    ("standard-webhooks", "standard-webhooks"),
)


def _secret_for(vendor: str) -> str:
    if vendor == "standard-webhooks":
        return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return secrets.token_urlsafe(32)


#: commented hints written under a vendor's source (Healthie publishes its sending addresses)
_HINTS = {
    "healthie": (
        "# Healthie signs no timestamp: restrict senders to its published addresses in production\n"
        '# allow_ips = ["52.4.158.130/32", "3.216.152.234/32", "54.243.233.84/32", '
        '"50.19.211.21/32"]\n'
        "# public_path = \"/webhooks/healthie\"   # the exact path registered with Healthie\n"
    ),
    "openevidence": "# allow_bare_signature = false   # refuse the untimestamped hex form\n",
}


def render_default_config() -> str:
    """The text of a fresh config with new random secrets."""
    parts = [_HEADER]
    for name, vendor in DEFAULT_SOURCES:
        secret = _secret_for(vendor)
        parts.append(f'\n[sources.{name}]\nvendor = "{vendor}"\nsecrets = ["{secret}"]\n')
        parts.append(_HINTS.get(vendor, ""))
    return "".join(parts)


def write_default_config(path: Path) -> None:
    """Create ``path`` (mode 0600: it holds secrets); refuse to overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(render_default_config())
