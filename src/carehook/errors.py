"""The one error tree of carehook.

Every error carehook raises on purpose derives from :class:`CarehookError`. Messages never carry
PHI, payload bytes, secrets or signatures: only ids, names and reasons.

    CarehookError
    ├── ConfigError                    bad or missing configuration
    ├── UnknownSource                  no source of that name              (404)
    ├── RequestRejected                refused before verification
    │   ├── AddressNotAllowed          remote address outside allow_ips    (403)
    │   ├── BodyTooLarge               over the source's max_body_bytes    (413)
    │   ├── UnsupportedMediaType       not application/json                (415)
    │   ├── MethodNotAllowed           not POST                            (405)
    │   └── RequestTimedOut            the body did not arrive in time     (408)
    ├── VerificationError              signature / timestamp refused       (401)
    ├── PayloadError                   signed, but not a JSON object       (400)
    │   ├── PayloadValidationError     fails the vendor's payload model    (422)
    │   └── UnstorableValue            a text the store refuses (NUL, lone surrogate ...) (422)
    ├── StorageError                   the store failed
    │   ├── StorageUnavailable         cannot commit now: sender retries   (503)
    │   └── LeaseLost                  a worker no longer holds the event it is working on
    ├── CryptoError                    payload key missing / ciphertext refused
    ├── ReviewError                    no such open review item
    └── StepError                      a workflow step failed
        ├── RetryableError             try again later (timeouts, 429, 5xx, storage hiccups)
        │   └── PartialFailure         some of the step's effects took place (``done``)
        └── PermanentError             retrying cannot help (other 4xx, validation)
    Deferred                           a step's planned wait: run again at ``until`` (no failure)

The mapping to retry decisions lives in one place: ``carehook.worker.policy.classify``.

The mapping to HTTP statuses lives in one place: ``carehook.web.ingress.STATUS_OF``.
"""

from __future__ import annotations

from datetime import datetime


class CarehookError(Exception):
    """Root of every error carehook raises on purpose."""


class ConfigError(CarehookError):
    """The configuration is missing, malformed or inconsistent."""


class UnknownSource(CarehookError):
    """A request named a source that is not configured."""

    def __init__(self, source: str) -> None:
        super().__init__(f"unknown source {source!r}")
        self.source = source


class RequestRejected(CarehookError):
    """A request was refused before its signature was looked at."""

    cause = "rejected"


class AddressNotAllowed(RequestRejected):
    """The remote address is not in the source's allow_ips."""

    cause = "address_not_allowed"


class BodyTooLarge(RequestRejected):
    """The body is larger than the source's max_body_bytes."""

    cause = "body_too_large"


class UnsupportedMediaType(RequestRejected):
    """The request's content type is not JSON."""

    cause = "unsupported_media_type"


class MethodNotAllowed(RequestRejected):
    """A webhook endpoint was called with another method than POST."""

    cause = "method_not_allowed"


class RequestTimedOut(RequestRejected):
    """The request's body did not arrive within the server's body timeout."""

    cause = "body_timeout"


class VerificationError(CarehookError):
    """A signature, signature header or timestamp was refused.

    ``reason`` is a short machine-readable cause (``missing_header``, ``bad_signature``,
    ``timestamp_skew`` ...); ``detail`` a human sentence safe to print (no secret, no body).
    """

    def __init__(self, reason: str, detail: str = "", *, skew_seconds: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.skew_seconds = skew_seconds


class PayloadError(CarehookError):
    """The body was signed correctly but is not a JSON object."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PayloadValidationError(PayloadError):
    """The JSON does not fit the vendor's payload model for a known event type.

    ``reason`` names the failing fields by location only, never their values.
    """


class UnstorableValue(PayloadError):
    """A field the store cannot keep as text (NUL, lone surrogate, control character, too long).

    A permanent input error, never a storage outage: the sender must not be told to retry.
    ``reason`` names the field, never its value.
    """


class StorageError(CarehookError):
    """The store failed."""


class StorageUnavailable(StorageError):
    """The store cannot commit right now; the sender should retry."""


class LeaseLost(StorageError):
    """The worker's lease on an event expired and another worker may hold it now."""

    def __init__(self, event_pk: int) -> None:
        super().__init__(f"lease on event {event_pk} was lost")
        self.event_pk = event_pk


class CryptoError(CarehookError):
    """A payload key is missing or a ciphertext failed authentication."""


class ReviewError(CarehookError):
    """A review item does not exist or is not open."""


class StepError(CarehookError):
    """A workflow step failed. The message must name ids and causes only, never PHI."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RetryableError(StepError):
    """A transient failure: the step is tried again after a back-off (or ``retry_after``)."""


class PartialFailure(RetryableError):
    """Some of a step's effects took place before it failed (an alert reached 1 of 2 targets).

    ``done`` names the parts that took effect; the worker records them with the event, and the
    step's retry gets them in ``StepContext.done`` so it repeats only the rest.
    """

    def __init__(
        self, message: str, *, done: frozenset[str], retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.done = done


class PermanentError(StepError):
    """A failure that retrying cannot fix: the event goes to dead letters."""


class Deferred(CarehookError):
    """A step's planned wait (e.g. a vendor's "ask again after"): the event runs again at
    ``until``, the attempt is not counted, nothing is recorded as a failure."""

    def __init__(self, until: datetime, reason: str = "deferred") -> None:
        super().__init__(reason)
        self.until = until
