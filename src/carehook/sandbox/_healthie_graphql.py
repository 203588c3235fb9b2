"""How the fake Healthie reads a GraphQL request: loosely, without a GraphQL library.

The first root field of the document (after the operation header) decides; its arguments come
from ``variables`` (``$name``) or inline literals (strings, numbers, enum words, lists of them).
For ``appointment`` the ``status`` argument of its ``transcripts`` field is read as well.
Aliases, fragments and several root fields are not supported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

ROOT_FIELDS = ("appointment", "webhooks", "createWebhook", "deleteWebhook",
               "expireWebhookSignature")  # fmt: skip

_ROOT = re.compile(r"\{\s*(\w+)\s*(?:\(([^)]*)\))?")
_ARG = re.compile(r'(\w+)\s*:\s*(\$\w+|"(?:[^"\\]|\\.)*"|\[[^\]]*\]|-?\d+|\w+)')
_TRANSCRIPTS = re.compile(r"\btranscripts\s*\(([^)]*)\)")


@dataclass(frozen=True, slots=True)
class Operation:
    """One request: its root field, arguments and (for ``appointment``) transcript statuses."""

    root: str
    args: dict[str, Any] = field(default_factory=dict)
    statuses: list[str] | None = None

    @property
    def key(self) -> str | None:
        """The id the request is about: ``id``, or ``input.id``; None when there is none."""
        value = self.args.get("id")
        if value is None and isinstance(self.args.get("input"), dict):
            value = self.args["input"].get("id")
        return None if value in (None, "") else str(value)


def _literal(raw: str, variables: dict[str, Any]) -> Any:
    if raw.startswith("$"):
        return variables.get(raw[1:])
    if raw.startswith('"'):
        return json.loads(raw)
    if raw.startswith("["):
        return [_literal(part.strip(), variables) for part in raw[1:-1].split(",") if part.strip()]
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    return {"true": True, "false": False, "null": None}.get(raw, raw)


def _args(text: str | None, variables: dict[str, Any]) -> dict[str, Any]:
    return {m.group(1): _literal(m.group(2), variables) for m in _ARG.finditer(text or "")}


def operation(body: bytes) -> Operation | None:
    """The operation of a request this fake serves, else None."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    query = payload.get("query") if isinstance(payload, dict) else None
    variables = payload.get("variables") if isinstance(payload, dict) else None
    variables = variables if isinstance(variables, dict) else {}
    if not isinstance(query, str):
        return None
    query = re.sub(r"#[^\n]*", "", query)
    match = _ROOT.search(query)
    if match is None or match.group(1) not in ROOT_FIELDS:
        return None
    statuses = None
    inner = _TRANSCRIPTS.search(query, match.end())
    if match.group(1) == "appointment" and inner is not None:
        status = _args(inner.group(1), variables).get("status")
        statuses = [str(s) for s in status] if isinstance(status, list) else (
            [str(status)] if status else None)
    return Operation(match.group(1), _args(match.group(2), variables), statuses)
