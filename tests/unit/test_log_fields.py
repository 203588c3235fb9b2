"""Every field our code passes to a logger is one the log's allowlist keeps.

The allowlist (``carehook.observability.ALLOWED_FIELDS``) drops any other field, so a field
missing from it vanishes from the log without an error (the purge's request count did). This
reads the source: each keyword of a ``<logger>.<level>(...)`` call must be allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import carehook
from carehook.observability import ALLOWED_FIELDS

_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
_SRC = Path(carehook.__file__).parent


def _logged_fields() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(_SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in _LEVELS):  # fmt: skip
                continue
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if "log" not in name.lower():
                continue
            for kw in node.keywords:
                if kw.arg is not None:
                    found.setdefault(kw.arg, []).append(f"{path.relative_to(_SRC)}:{node.lineno}")
    return found


def test_every_logged_field_is_allowed() -> None:
    """No log call passes a field that the allowlist would silently drop."""
    fields = _logged_fields()
    assert len(fields) > 20  # the scan found the log calls (it reads the real source)
    dropped = {k: v for k, v in fields.items() if k not in ALLOWED_FIELDS}
    assert dropped == {}
