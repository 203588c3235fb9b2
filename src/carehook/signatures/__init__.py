"""Signature schemes: pure functions of the raw request, the secrets and the clock.

Every scheme verifies the *raw* body bytes, compares with ``hmac.compare_digest``, and turns
every malformed header into :class:`carehook.errors.VerificationError` (never another exception).
``verify`` returns the index of the secret that matched, so the store can record which one did
without ever storing its value. ``sign`` builds the headers a genuine sender would send; the
simulator and the tests use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from carehook.envelope import SignedRequest


@dataclass(frozen=True, slots=True)
class SchemeOptions:
    """Per-source knobs of a scheme.

    ``headers`` renames a scheme's headers (keys are the scheme's default lower-case names);
    ``allow_bare`` lets OpenEvidence's bare-hex form (no timestamp) through.
    """

    tolerance_seconds: int = 300
    allow_bare: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)
    template: str | None = None


class Scheme(Protocol):
    """A webhook signature scheme bound to its options."""

    @property
    def name(self) -> str:
        """The scheme's name (read-only, so frozen dataclasses implement the protocol)."""
        ...

    def verify(self, request: SignedRequest, secrets: Sequence[str], now: float) -> int:
        """Return the index of the first secret that verifies, else raise VerificationError."""
        ...

    def sign(self, request: SignedRequest, secret: str, now: float) -> dict[str, str]:
        """Return the headers a sender holding ``secret`` would add to ``request`` at ``now``."""
        ...
