"""Retry policy (exponential back-off with full jitter, Retry-After, exhaustion) and classify."""

from __future__ import annotations

import random

import pytest

from carehook.errors import (
    CarehookError,
    ConfigError,
    CryptoError,
    LeaseLost,
    PermanentError,
    RetryableError,
    StorageError,
    StorageUnavailable,
)
from carehook.worker.policy import RetryPolicy, classify


@pytest.mark.parametrize("attempt", range(1, 15))
def test_delay_stays_within_the_exponential_ceiling(attempt: int) -> None:
    """The n-th retry waits in [0, min(cap, base * 2**(n-1))]."""
    policy = RetryPolicy(base_seconds=5, cap_seconds=3600, max_attempts=12)
    rng = random.Random(attempt)
    ceiling = min(3600, 5 * 2 ** (attempt - 1))
    delays = [policy.delay(attempt, None, rng) for _ in range(200)]
    assert all(0 <= d <= ceiling for d in delays)


def test_jitter_spreads_over_the_whole_window() -> None:
    """Full jitter: delays fill the window rather than clustering at its top."""
    policy = RetryPolicy(base_seconds=10, cap_seconds=3600)
    rng = random.Random(1)
    delays = [policy.delay(4, None, rng) for _ in range(1000)]  # window [0, 80]
    assert min(delays) < 8
    assert max(delays) > 72


def test_delay_is_reproducible_with_a_seeded_rng() -> None:
    """The same seed gives the same delays (the rng is the only source of chance)."""
    policy = RetryPolicy()
    first = [policy.delay(n, None, random.Random(42)) for n in range(1, 8)]
    again = [policy.delay(n, None, random.Random(42)) for n in range(1, 8)]
    assert first == again


def test_the_cap_bounds_late_attempts() -> None:
    """After many attempts the wait never passes the cap."""
    policy = RetryPolicy(base_seconds=5, cap_seconds=60)
    rng = random.Random(3)
    assert max(policy.delay(40, None, rng) for _ in range(500)) <= 60


def test_retry_after_is_a_floor() -> None:
    """A Retry-After longer than the jittered wait is honoured."""
    policy = RetryPolicy(base_seconds=1, cap_seconds=3600)
    rng = random.Random(5)
    assert all(policy.delay(1, 120.0, rng) >= 120.0 for _ in range(100))


def test_retry_after_beyond_the_cap_is_capped() -> None:
    """A destination asking for a day waits the cap, not a day."""
    policy = RetryPolicy(base_seconds=1, cap_seconds=600)
    assert policy.delay(1, 86400.0, random.Random(0)) == 600.0


def test_exhaustion_counts_attempts() -> None:
    """With max_attempts 3, attempts 1 and 2 may retry; the 3rd failure is final."""
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_defaults_are_the_documented_ones() -> None:
    """5 s base, 1 h cap, 12 attempts."""
    assert RetryPolicy() == RetryPolicy(5.0, 3600.0, 12)


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (RetryableError("EHR 503"), True),
        (StorageUnavailable("database is locked"), True),
        (LeaseLost(7), True),
        (StorageError("insert failed"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (OSError("disk"), True),
        (PermanentError("EHR 400"), False),
        (ConfigError("no destination"), False),
        (CryptoError("key missing"), False),
        (CarehookError("other"), False),
        (KeyError("x"), True),
    ],
)
def test_classify_maps_errors_to_retry_decisions(exc: BaseException, retryable: bool) -> None:
    """Timeouts, connection errors, storage hiccups and unknown errors retry; 4xx-like do not."""
    failure = classify(exc)
    assert failure.retryable is retryable
    assert failure.error_class == type(exc).__name__


def test_classify_keeps_retry_after_and_our_messages() -> None:
    """Our errors keep their (PHI-free) message and Retry-After."""
    failure = classify(RetryableError("429 from the EHR", retry_after=30.0))
    assert (failure.message, failure.retry_after) == ("429 from the EHR", 30.0)


def test_classify_withholds_foreign_messages() -> None:
    """A foreign exception's message may quote input: only its class is kept."""
    failure = classify(ValueError("patient Jane Doe, MRN 12345"))
    assert "Jane" not in failure.message
    assert "12345" not in failure.message
    failure = classify(ConnectionError("reset by 10.0.0.7 while sending Jane's note"))
    assert "Jane" not in failure.message
