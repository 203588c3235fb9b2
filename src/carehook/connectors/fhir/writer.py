"""Idempotent creates on any FHIR server: conditional create where the server declares it,
otherwise search by identifier first, with a durable write ledger around the POST.

:class:`IdempotentEhr` is the ``Ehr`` the workflows get. Its ``create(resource,
if_none_exist="identifier=<system>|<value>")`` does, per resource type, what the server's
CapabilityStatement (read once, at the first write, or forced by ``conditional_create``) allows:

``conditional`` (HAPI, Medplum, the sandbox)::

    ledger.intend → POST If-None-Exist → ledger.written(id)

``search-first`` (Epic, Oracle Health: ``conditionalCreate`` false, If-None-Exist ignored)::

    ledger has the id     → GET {type}/{id} → it exists: done, nothing created
    search by identifier  → a match: ledger.written(its id), done
    ledger has an intent without id, younger than ``pending_seconds``
                          → RetryableError: an earlier POST may still be in flight; search again
    ledger.intend → POST (no If-None-Exist) → ledger.written(id)

A POST answered 4xx or 503 created nothing, so its intent is dropped; one that failed in
transport (timeout, reset) or with another 5xx keeps it, and the next attempt waits and searches.

The residual window (search-first servers only): a POST the server committed but whose answer
was lost, retried after ``pending_seconds`` while the server's search still does not find the
resource (an index lagging that long), files a second note. No client-side protocol can close
it without conditional create or client-assigned ids (``PUT`` create-on-update, which Epic and
Oracle refuse): the server alone knows whether it committed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx

from carehook.connectors.fhir.capabilities import Capabilities, CreateMode, parse_capabilities
from carehook.connectors.fhir.client import FhirClient
from carehook.connectors.fhir.ledger import WriteKey, WriteLedger
from carehook.errors import PermanentError, RetryableError, StepError
from carehook.observability import get_logger

_log = get_logger("carehook.fhir")


def parse_condition(if_none_exist: str) -> tuple[str, str]:
    """``identifier=<system>|<value>`` (escaped, URL-quoted) as (system, value)."""
    name, _, token = if_none_exist.partition("=")
    if name != "identifier" or not token:
        raise ValueError("If-None-Exist must be identifier=<system>|<value>")
    text, current, escaped = unquote(token), "", False
    parts: list[str] = []
    for char in text:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == "|" and not parts:
            parts.append(current)
            current = ""
        else:
            current += char
    if not parts:
        raise ValueError("If-None-Exist identifier has no system")
    return parts[0], current


#: answers that say the request was not processed (a 500, 502 or 504 may hide a commit)
_NOT_PROCESSED = re.compile(r": (4\d\d|503) \(")


def _refused(exc: StepError) -> bool:
    """Whether a failed POST certainly created nothing: a 4xx or 503 answer. A transport
    failure (raised from the httpx error) or another 5xx may have landed."""
    if isinstance(exc.__cause__, httpx.HTTPError):
        return False
    return _NOT_PROCESSED.search(str(exc)) is not None


def _carries(resource: Mapping[str, Any], key: WriteKey) -> bool:
    """Whether ``resource`` has the identifier ``key`` names (a list, or one Identifier)."""
    found = resource.get("identifier")
    return any(isinstance(i, Mapping) and i.get("system") == key.system
               and i.get("value") == key.value
               for i in (found if isinstance(found, list) else [found]))  # fmt: skip


class IdempotentEhr:
    """A :class:`FhirClient` whose creates never duplicate (implements ``Ehr``)."""

    def __init__(
        self, client: FhirClient, ledger: WriteLedger, destination: str, *,
        conditional_create: str = "auto", pending_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.client = client
        self._ledger = ledger
        self._destination = destination
        self._override = conditional_create
        self._pending = pending_seconds
        self._clock = clock
        self._capabilities: Capabilities | None = None

    async def capabilities(self) -> Capabilities:
        """The server's declared capabilities (read once; ``yes``/``no`` need no read)."""
        if self._capabilities is None:
            if self._override in ("yes", "no"):
                self._capabilities = Capabilities({})
            else:
                self._capabilities = parse_capabilities(await self.client.capabilities())
        return self._capabilities

    async def create_mode(self, resource_type: str) -> CreateMode:
        """``conditional`` or ``search-first`` for ``resource_type`` on this server."""
        return (await self.capabilities()).create_mode(resource_type, self._override)

    # -- Ehr -----------------------------------------------------------------------------------

    async def search(self, resource_type: str, system: str, value: str) -> dict[str, Any] | None:
        """The one resource with that identifier, or None."""
        return await self.client.search(resource_type, system, value)

    async def update(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Update by id."""
        return await self.client.update(resource)

    async def read(self, resource_type: str, logical_id: str) -> dict[str, Any]:
        """One resource by id."""
        return await self.client.read(resource_type, logical_id)

    async def create(
        self, resource: Mapping[str, Any], *, if_none_exist: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Create once per identifier (see the module docstring); (stored, created)."""
        if if_none_exist is None:
            return await self.client.create(resource)
        kind = str(resource.get("resourceType"))
        system, value = parse_condition(if_none_exist)
        key = WriteKey(self._destination, kind, system, value)
        if await self.create_mode(kind) == "conditional":
            return await self._post(key, resource, if_none_exist)
        found = await self._existing(key)
        if found is not None:
            return found, False
        return await self._post(key, resource, None)

    # -- parts ---------------------------------------------------------------------------------

    async def _existing(self, key: WriteKey) -> dict[str, Any] | None:
        """The resource already made for ``key`` (by recorded id, else by search), or None;
        RetryableError while an earlier, unanswered POST may still land."""
        entry = await self._ledger.get(key)
        if entry is not None and entry.server_id is not None:
            try:
                stored = await self.client.read(key.resource_type, entry.server_id)
            except PermanentError:
                stored = None  # gone (deleted, merged): look for it by identifier
            if stored is not None and _carries(stored, key):
                return stored  # (an id of another server, after a url change, is not trusted)
        found = await self.client.search(key.resource_type, key.system, key.value)
        if found is not None:
            await self._ledger.written(key, str(found.get("id")), self._now())
            return found
        if entry is not None and entry.server_id is None:
            age = self._clock() - entry.intent_at.timestamp()
            if age < self._pending:
                _log.info("fhir.create.pending", resource_type=key.resource_type,
                          destination=key.destination)  # fmt: skip
                raise RetryableError(f"fhir create {key.resource_type}: an earlier create is "
                                     "unanswered and not found yet; searching again later",
                                     retry_after=self._pending - age)  # fmt: skip
        return None

    async def _post(
        self, key: WriteKey, resource: Mapping[str, Any], if_none_exist: str | None
    ) -> tuple[dict[str, Any], bool]:
        await self._ledger.intend(key, self._now())
        try:
            stored, created = await self.client.create(resource, if_none_exist=if_none_exist)
        except StepError as exc:
            if _refused(exc):
                await self._ledger.forget(key)
            raise
        await self._ledger.written(key, str(stored.get("id")), self._now())
        return stored, created

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)
