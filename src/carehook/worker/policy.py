"""Retry policy and error classification. Pure: no clock, no I/O (randomness is injected).

Back-off is exponential with full jitter: the n-th retry waits a uniformly random time in
``[0, min(cap, base * 2**(n-1))]``, but never less than a ``Retry-After`` the destination asked
for. After ``max_attempts`` attempts the event is dead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from carehook.errors import CarehookError, PermanentError, RetryableError, StorageError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a source's failed events are retried."""

    base_seconds: float = 5.0
    cap_seconds: float = 3600.0
    max_attempts: int = 12

    def delay(self, attempts: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** max(attempts - 1, 0))
        wait = rng.uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cap_seconds))
        return wait

    def exhausted(self, attempts: int) -> bool:
        """True when no attempt is left after ``attempts`` tries."""
        return attempts >= self.max_attempts


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed attempt is recorded as: class, a PHI-free message, retryable or not."""

    error_class: str
    message: str
    retryable: bool
    retry_after: float | None = None


def classify(exc: BaseException) -> Failure:
    """Our errors carry safe messages and say whether to retry; foreign ones are retryable.

    A foreign exception's message may quote input (a KeyError repeats the key, a ValueError
    the value), so only its class name is kept.
    """
    name = type(exc).__name__
    if isinstance(exc, PermanentError):
        return Failure(name, str(exc)[:500], retryable=False)
    if isinstance(exc, RetryableError):
        return Failure(name, str(exc)[:500], retryable=True, retry_after=exc.retry_after)
    if isinstance(exc, StorageError):
        return Failure(name, str(exc)[:500], retryable=True)
    if isinstance(exc, CarehookError):
        return Failure(name, str(exc)[:500], retryable=False)
    if isinstance(exc, TimeoutError | ConnectionError | OSError):
        return Failure(name, "transient I/O failure", retryable=True)
    return Failure(name, "unexpected error (details withheld: may quote input)", retryable=True)
