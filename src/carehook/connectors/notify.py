"""Notifications through Apprise: named channels of Apprise URLs (a :class:`Notifier`).

Each channel (``clinical``, ``ops``, ``requester`` ...) is a list of Apprise URLs: ``mailto://``
for email, ``slack://`` for Slack, ``json://`` for any JSON webhook, and the rest of Apprise's
catalogue. One ``apprise.Apprise`` per channel is built once, at construction, with every URL
checked there: an invalid URL is a :class:`ConfigError` naming the channel and the URL's index,
never the URL (it holds credentials). Apprise is synchronous, so each target's send runs in a
worker thread (``asyncio.to_thread``), the targets at once.

Each target is sent to on its own, so a partial failure is known target by target: if any
target fails, :meth:`AppriseNotifier.notify` raises :class:`PartialFailure`
``"notify <channel>: n of m targets failed"`` whose ``done`` names the targets reached
(``<channel>[<index>]``); the worker records them and the retry passes them back as ``skip``,
so a target that already got the alert is not paged again (a crash between the send and that
record can still repeat it).

What is sent (:func:`render_alert`) is built from the :class:`Alert` alone: its title, severity,
source, event type, event pk, subject, link and facts (ids), one per line, with control characters
flattened so no value can forge a line. Alerts hold no PHI by construction and nothing else is
added. Severity maps to Apprise's notify type: info, success, warning; high and critical (and
failure, error) to failure; anything else to warning.

Apprise's logs are kept out of carehook's (:func:`quiet_apprise_logs`, run by the constructor):
Apprise logs through the stdlib ``apprise`` logger, and at TRACE it prints every parsed URL with
its password, at DEBUG the endpoint URLs (a Slack webhook's path is its token) and the receiver's
response bytes; ``urllib3`` (under ``requests``, which Apprise uses) logs request paths at DEBUG.
Both loggers get a level above CRITICAL, so those records are never even created, and stop
propagating to the root logger (where pytest, a stdlib handler or Python's last-resort stderr
handler would print them). This is process-wide, and it also leaves Apprise's per-call captured
logs (``AppriseResult.logs()``) empty; carehook never reads them.

Outbound addresses: Apprise connects by itself (``requests``, ``smtplib``), so the SSRF guard of
:mod:`carehook.connectors.outbound` cannot pin its connections. Redirects are disabled for every
target. With ``allow_private=False`` the hosts a URL names (the ``json``/``xml``/``form`` webhook
host, the ``mailto`` SMTP server) are resolved and checked before each send; other plugins talk to
their vendor's fixed hosts and are not checked. This is check-then-connect: a DNS answer that
changes between the check and Apprise's own lookup is not caught. The default is
``allow_private=True``: channels are operator configuration, and a local relay is common.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import apprise

from carehook.connectors.outbound import check_host
from carehook.errors import ConfigError, PartialFailure, PermanentError
from carehook.workflows.ports import Alert

_QUIET = logging.CRITICAL + 1
_QUIETED_LOGGERS = (apprise.LOGGER_NAME, "urllib3")
_NOTIFY_TYPES = {
    "info": apprise.NotifyType.INFO,
    "success": apprise.NotifyType.SUCCESS,
    "warning": apprise.NotifyType.WARNING,
    "high": apprise.NotifyType.FAILURE,
    "critical": apprise.NotifyType.FAILURE,
    "failure": apprise.NotifyType.FAILURE,
    "error": apprise.NotifyType.FAILURE,
}
#: URL schemes whose host is a user-chosen server carehook connects to, and the attribute
#: holding it on the Apprise plugin
_HOST_ATTRIBUTES = {
    **dict.fromkeys(("json", "jsons", "xml", "xmls", "form", "forms"), "host"),
    **dict.fromkeys(("mailto", "mailtos"), "smtp_host"),
}


def quiet_apprise_logs() -> None:
    """Stop Apprise's and urllib3's stdlib log records, which may hold URLs and credentials."""
    for name in _QUIETED_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(_QUIET)
        logger.propagate = False


def notify_type(severity: str) -> apprise.NotifyType:
    """Apprise's notify type for an alert severity (unknown severities: warning)."""
    return _NOTIFY_TYPES.get(severity.lower(), apprise.NotifyType.WARNING)


def _flat(value: object) -> str:
    """One line: control characters (newlines ...) become spaces."""
    return "".join(c if c.isprintable() else " " for c in str(value)).strip()


def render_alert(alert: Alert) -> tuple[str, str]:
    """The title and plain-text body sent for ``alert``: its own fields only, one per line."""
    title = f"[{_flat(alert.severity).upper()}] {_flat(alert.title)}"
    lines = [
        _flat(alert.title),
        f"severity: {_flat(alert.severity)}",
        f"source: {_flat(alert.source)}",
        f"event type: {_flat(alert.event_type)}",
        f"event: {alert.event_pk}",
        f"subject: {_flat(alert.subject)}",
    ]
    if alert.link:
        lines.append(f"link: {_flat(alert.link)}")
    lines.extend(f"{_flat(key)}: {_flat(value)}" for key, value in sorted(alert.facts.items()))
    return title, "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Target:
    """One target: its Apprise object and the (host, port) to check before sending, if any."""

    apprise: apprise.Apprise
    host: tuple[str, int] | None


def target_key(channel: str, index: int) -> str:
    """How a channel's target is named in a step's recorded parts (never its URL)."""
    return f"{channel}[{index}]"


def _network_host(url: str, service: apprise.NotifyBase) -> tuple[str, int] | None:
    scheme = url.partition("://")[0].lower()
    attribute = _HOST_ATTRIBUTES.get(scheme)
    host = getattr(service, attribute, None) if attribute else None
    if not isinstance(host, str) or not host:
        return None
    port = getattr(service, "port", None)
    return host, port if isinstance(port, int) else 0


def _build_channel(
    name: str, urls: Sequence[str], asset: apprise.AppriseAsset
) -> tuple[_Target, ...]:
    targets = []
    for index, url in enumerate(urls):
        service = apprise.Apprise.instantiate(url, asset=asset) if isinstance(url, str) else None
        if service is None:
            raise ConfigError(f"channel {name!r}: target #{index} is not a valid Apprise URL")
        service.redirects = False  # a URL's own redirect=yes included
        manager = apprise.Apprise(asset=asset)
        manager.add(service)
        targets.append(_Target(manager, _network_host(url, service)))
    return tuple(targets)


def _send(target: _Target, title: str, body: str, kind: apprise.NotifyType) -> bool:
    """Send to one target (in a worker thread); a crash inside a plugin is a failed send."""
    try:
        return bool(target.apprise.notify(body, title=title, notify_type=kind,
                                          body_format=apprise.NotifyFormat.TEXT))  # fmt: skip
    except Exception:  # third-party plugin code: any error means this target was not reached
        return False


class AppriseNotifier:
    """Named channels of Apprise URLs (implements ``Notifier``); see the module docstring."""

    def __init__(
        self, channels: Mapping[str, Sequence[str]], *, allow_private: bool = True
    ) -> None:
        quiet_apprise_logs()  # before any URL is parsed: parsing logs the password at TRACE
        asset = apprise.AppriseAsset(http_redirects=False, storage_mode="memory")
        self._allow_private = allow_private
        self._channels = {
            name: _build_channel(name, urls, asset) for name, urls in channels.items() if urls
        }

    def __repr__(self) -> str:
        return f"AppriseNotifier(channels={sorted(self._channels)!r})"

    def configured(self, channel: str) -> bool:
        """Whether ``channel`` has at least one target."""
        return channel in self._channels

    async def notify(self, channel: str, alert: Alert, *, skip: Collection[str] = ()) -> None:
        """Send ``alert`` to every target of ``channel`` not named in ``skip``; PartialFailure
        (naming the targets reached) if any target failed."""
        found = self._channels.get(channel)
        if found is None:
            raise PermanentError(f"notify {channel}: channel not configured")
        pending = [(target_key(channel, i), t) for i, t in enumerate(found)
                   if target_key(channel, i) not in skip]  # fmt: skip
        if not self._allow_private:
            for _, target in pending:
                if target.host is not None:
                    await check_host(*target.host, allow_private=False)
        title, body = render_alert(alert)
        kind = notify_type(alert.severity)
        sent = await asyncio.gather(
            *(asyncio.to_thread(_send, target, title, body, kind) for _, target in pending)
        )
        reached = frozenset(key for (key, _), ok in zip(pending, sent, strict=True) if ok)
        failed = len(pending) - len(reached)
        if failed:
            raise PartialFailure(
                f"notify {channel}: {failed} of {len(found)} targets failed", done=reached
            )
