"""Writing ``carehook.toml``: a first one (one source per built-in vendor, fresh random secrets),
merged snippets, and a source's secrets (added, retired), always mode 0600."""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from carehook.errors import ConfigError
from carehook.settings import SourceSettings, describe_error

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


def new_secret(vendor: str) -> str:
    """A fresh random secret in the form the vendor's scheme expects."""
    return _secret_for(vendor)


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


def merge_tables(config: str, snippet: str) -> str:
    """``config`` with the key lines of each ``[table]`` of ``snippet`` merged in (pure text).

    A table the config has gets the snippet's keys right after its header, replacing the
    config's lines for the same keys; a table it lacks is appended whole. Comments and the rest
    of the file are kept as written, so a hand-edited config stays readable. Only plain
    ``[table]`` headers and ``key = value`` lines on one line are understood (what carehook
    writes); the result is checked by the caller with :func:`carehook.settings.load_settings`.
    """
    lines = config.splitlines()
    for header, keys in _tables(snippet):
        if header in (line.strip() for line in lines):
            at = next(i for i, line in enumerate(lines) if line.strip() == header)
            names = {k.split("=", 1)[0].strip() for k in keys}
            end = _table_end(lines, at)
            body = [ln for ln in lines[at + 1 : end]
                    if ln.split("=", 1)[0].strip() not in names or "=" not in ln]  # fmt: skip
            lines[at + 1 : end] = [*keys, *body]
        else:
            lines += ["", header, *keys]
    return "\n".join(lines) + "\n"


def _tables(snippet: str) -> list[tuple[str, list[str]]]:
    """The ``[table]`` headers of ``snippet`` with their key lines (comments dropped)."""
    out: list[tuple[str, list[str]]] = []
    for raw in snippet.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            out.append((line, []))
        elif out and line and not line.startswith("#") and "=" in line:
            out[-1][1].append(line)
    return out


def _table_end(lines: list[str], header_at: int) -> int:
    """Where the table whose header is at ``header_at`` ends (the next header, or the end)."""
    for i in range(header_at + 1, len(lines)):
        if lines[i].strip().startswith("["):
            return i
    return len(lines)


# -- secrets ------------------------------------------------------------------------------------
#
# Each secret of a source has an id, what the store records with the events it verified
# (``secret_index``): ``secret_ids`` lists them beside ``secrets``, in the same order (absent: the
# positions 0, 1, ... of a source never rotated). ``add`` appends a secret with the next id never
# given, ``retire ID`` removes a secret with its id and lists the id in ``retired_secret_ids``, so
# an id is never given again and the ids of stored events keep their meaning. Entries are kept as
# written (``env:NAME`` stays a reference).


def source_secrets(path: Path, source: str) -> list[str]:
    """The ``secrets`` entries of ``[sources.<source>]`` as written in the file."""
    table = _source_table(tomllib.loads(path.read_text()), source, path)
    found = table.get("secrets", [])
    if not isinstance(found, list) or not all(isinstance(s, str) for s in found):
        raise ConfigError(f"{path}: sources.{source}.secrets must be a list of strings")
    return list(found)


@dataclass(frozen=True, slots=True)
class SourceSecrets:
    """A source's secrets as written, their ids, and the ids retired (never given again)."""

    secrets: list[str]
    ids: list[int]
    retired: list[int]

    def next_id(self) -> int:
        """The id the next secret gets: one above every id given so far."""
        return max([*self.ids, *self.retired], default=-1) + 1


def source_secret_ids(path: Path, source: str) -> SourceSecrets:
    """The source's secrets as written, their ids (positions when ``secret_ids`` is absent) and
    the retired ids; the source's table is checked as ``load_settings`` checks it (one id per
    secret, none given twice), so a rewrite never starts from ids that do not fit."""
    table = _source_table(tomllib.loads(path.read_text()), source, path)
    try:
        cfg = SourceSettings.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(f"{path}: sources.{source}: {describe_error(exc)}") from None
    return SourceSecrets(list(cfg.secrets), cfg.ids(), list(cfg.retired_secret_ids))


def add_secret(path: Path, source: str, secret: str) -> int:
    """Append ``secret`` to the source's secrets (kept once) with a new id; returns its id."""
    if not secret or secret != secret.strip() or "\n" in secret:
        raise ConfigError("a secret must be non-empty, one line, without surrounding spaces")
    have = source_secret_ids(path, source)
    if secret in have.secrets:
        return have.ids[have.secrets.index(secret)]
    new = have.next_id()
    write_secrets(path, source, SourceSecrets([*have.secrets, secret], [*have.ids, new],
                                              have.retired))  # fmt: skip
    return new


def retire_secret(path: Path, source: str, secret_id: int) -> None:
    """Remove the secret with id ``secret_id`` (never the last one: the source would refuse
    everything); its id is listed as retired."""
    have = source_secret_ids(path, source)
    if secret_id not in have.ids:
        raise ConfigError(f"sources.{source} has no secret {secret_id} (its ids: "
                          f"{', '.join(map(str, have.ids)) or 'none'})")  # fmt: skip
    if len(have.ids) == 1:
        raise ConfigError(f"secret {secret_id} is the only secret of sources.{source}: "
                          "add its successor first")  # fmt: skip
    at = have.ids.index(secret_id)
    write_secrets(path, source, SourceSecrets(
        have.secrets[:at] + have.secrets[at + 1:], have.ids[:at] + have.ids[at + 1:],
        sorted({*have.retired, secret_id})))  # fmt: skip


def write_secrets(path: Path, source: str, new: SourceSecrets) -> None:
    """Rewrite the source's ``secrets`` and ``secret_ids`` lines (and ``retired_secret_ids``
    once there is one; comments and the rest kept), checked, mode 0600."""
    lines = ["secrets = [" + ", ".join(json.dumps(s) for s in new.secrets) + "]",
             "secret_ids = [" + ", ".join(map(str, new.ids)) + "]"]  # fmt: skip
    if new.retired:
        lines.append("retired_secret_ids = [" + ", ".join(map(str, new.retired)) + "]")
    merged = merge_tables(path.read_text(), f"[sources.{source}]\n" + "\n".join(lines) + "\n")
    try:
        table = _source_table(tomllib.loads(merged), source, path)
        written = (table.get("secrets"), table.get("secret_ids"),
                   table.get("retired_secret_ids", []))  # fmt: skip
    except tomllib.TOMLDecodeError:
        written = None
    if written != (new.secrets, new.ids, new.retired):
        raise ConfigError(f"{path}: cannot rewrite sources.{source}.secrets in place (is it a "
                          "multi-line array?); write it on one line and try again")  # fmt: skip
    write_private(path, merged)


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically; the file is mode 0600 (it holds secrets)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _source_table(config: dict[str, object], source: str, path: Path) -> dict[str, object]:
    sources = config.get("sources")
    table = sources.get(source) if isinstance(sources, dict) else None
    if not isinstance(table, dict):
        raise ConfigError(f"{path} has no [sources.{source}]")
    return table
