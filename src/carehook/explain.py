"""Why a captured request passes or fails verification: the logic behind ``carehook verify``.

Pure: it takes the parsed request, a source and the clock, and returns findings as sentences
that never contain a secret, a signature value or the body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from carehook.envelope import SignedRequest
from carehook.errors import ConfigError, PayloadError, PayloadValidationError, VerificationError
from carehook.sources import Source


@dataclass(slots=True)
class Explanation:
    """What verification found, in order."""

    ok: bool = False
    lines: list[str] = field(default_factory=list)


def parse_header_text(text: str) -> tuple[dict[str, str], str | None, str | None]:
    """Headers from a JSON object or ``Name: value`` lines (an optional request line first).

    Returns (headers with lower-case names, method or None, target or None).
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except ValueError as exc:
            raise ConfigError("the headers file is not valid JSON") from exc
        if not isinstance(obj, dict):
            raise ConfigError("the headers file must hold a JSON object")
        return {str(k).lower(): str(v) for k, v in obj.items()}, None, None
    headers: dict[str, str] = {}
    method = target = None
    for n, line in enumerate(stripped.splitlines()):
        if n == 0 and ":" not in line.split(" ", 1)[0] and " " in line:
            method, _, rest = line.partition(" ")
            target = rest.split(" ", 1)[0]
            continue
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers[name.strip().lower()] = value.strip()
    return headers, method, target


def explain(source: Source, request: SignedRequest, now: float) -> Explanation:
    """Verify ``request`` as ``source`` would, and say why it passes or fails."""
    out = Explanation()
    out.lines.append(f"source {source.name!r} (vendor {source.vendor.name}, scheme "
                     f"{source.scheme.name}), {len(source.secrets)} secret(s) configured")
    out.lines.append(f"signed path {request.path!r}, method {request.method}, "
                     f"{len(request.body)} body bytes")
    if not source.secrets:
        out.lines.append("FAIL: the source has no secret, so it refuses every request")
        return out
    matched = _try_secrets(source, request, now, out)
    if matched is None:
        return out
    out.ok = _explain_payload(source, request, out)
    return out


def _try_secrets(
    source: Source, request: SignedRequest, now: float, out: Explanation
) -> int | None:
    matched: int | None = None
    # by id, as the store and `carehook secrets ls` name secrets (a position until a rotation)
    for i, secret in zip(source.secret_ids, source.secrets, strict=True):
        try:
            source.scheme.verify(request, (secret,), now)
        except VerificationError as exc:
            detail = f" ({exc.detail})" if exc.detail else ""
            out.lines.append(f"secret #{i}: {exc.reason}{detail}")
            if exc.reason == "timestamp_skew" and exc.skew_seconds is not None:
                _retry_without_skew(source, request, now, exc.skew_seconds, secret, i, out)
            continue
        out.lines.append(f"secret #{i}: signature matches")
        matched = i if matched is None else matched
    if matched is None:
        out.lines.append("FAIL: no configured secret verifies this request (answer: 401)")
    return matched


def _retry_without_skew(
    source: Source, request: SignedRequest, now: float, skew: float, secret: str, i: int,
    out: Explanation,
) -> None:
    try:
        source.scheme.verify(request, (secret,), now - skew)
    except VerificationError as exc:
        out.lines.append(f"  at the request's own time secret #{i} would still fail: {exc.reason}")
    else:
        out.lines.append(
            f"  at the request's own time secret #{i} matches: the signature is right, the "
            f"timestamp is {abs(skew):.0f} s {'old' if skew > 0 else 'in the future'} "
            "(replayed capture or clock drift)"
        )


def _explain_payload(source: Source, request: SignedRequest, out: Explanation) -> bool:
    try:
        payload = json.loads(request.body)
    except (ValueError, RecursionError):
        out.lines.append("FAIL: the body is not valid JSON (answer: 400)")
        return False
    if not isinstance(payload, dict):
        out.lines.append("FAIL: the body is JSON but not an object (answer: 400)")
        return False
    try:
        parsed = source.vendor.parse(request.body, payload, headers=request.headers)
    except PayloadError as exc:
        status = 422 if isinstance(exc, PayloadValidationError) else 400
        out.lines.append(f"FAIL: payload refused: {exc.reason} (answer: {status})")
        return False
    out.lines.append(
        f"OK: event {parsed.event_id} of type {parsed.type}, subject {parsed.subject}"
        + ("" if parsed.handled else " (no workflow for this type: stored as unhandled)")
    )
    return True


def signed_request(
    headers: Mapping[str, str], body: bytes, method: str, path: str, query: str
) -> SignedRequest:
    """A SignedRequest from captured parts."""
    return SignedRequest(method=method.upper(), path=path, query=query, headers=headers, body=body)
