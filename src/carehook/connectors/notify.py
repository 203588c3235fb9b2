"""Notifications through Apprise: named channels of Apprise URLs (a :class:`Notifier`).

Each channel (``clinical``, ``ops``, ``requester`` ...) is a list of Apprise URLs: ``mailto://``
for email, ``slack://`` for Slack, ``json://`` for any JSON webhook, and the rest of Apprise's
catalogue. One ``apprise.Apprise`` per channel is built once, at construction, with every URL
checked there: an invalid URL is a :class:`ConfigError` naming the channel and the URL's index,
never the URL (it holds credentials). Apprise is synchronous, so a send runs in a worker thread
(``asyncio.to_thread``); if any target fails, :meth:`AppriseNotifier.notify` raises
:class:`RetryableError` ``"notify <channel>: n of m targets failed"``.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import apprise

from carehook.connectors.outbound import check_host
from carehook.errors import ConfigError, PermanentError, RetryableError
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
class _Channel:
    """One channel's Apprise object and the (host, port) pairs to check before sending."""

    apprise: apprise.Apprise
    size: int
    hosts: tuple[tuple[str, int], ...]


def _network_host(url: str, service: apprise.NotifyBase) -> tuple[str, int] | None:
    scheme = url.partition("://")[0].lower()
    attribute = _HOST_ATTRIBUTES.get(scheme)
    host = getattr(service, attribute, None) if attribute else None
    if not isinstance(host, str) or not host:
        return None
    port = getattr(service, "port", None)
    return host, port if isinstance(port, int) else 0


def _build_channel(name: str, urls: Sequence[str], asset: apprise.AppriseAsset) -> _Channel:
    manager = apprise.Apprise(asset=asset)
    hosts: list[tuple[str, int]] = []
    for index, url in enumerate(urls):
        service = apprise.Apprise.instantiate(url, asset=asset) if isinstance(url, str) else None
        if service is None:
            raise ConfigError(f"channel {name!r}: target #{index} is not a valid Apprise URL")
        service.redirects = False  # a URL's own redirect=yes included
        manager.add(service)
        host = _network_host(url, service)
        if host is not None:
            hosts.append(host)
    return _Channel(apprise=manager, size=len(urls), hosts=tuple(hosts))


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

    async def notify(self, channel: str, alert: Alert) -> None:
        """Send ``alert`` to every target of ``channel``; RetryableError if any target failed."""
        found = self._channels.get(channel)
        if found is None:
            raise PermanentError(f"notify {channel}: channel not configured")
        if not self._allow_private:
            for host, port in found.hosts:
                await check_host(host, port, allow_private=False)
        title, body = render_alert(alert)
        try:
            result = await asyncio.to_thread(
                found.apprise.notify,
                body,
                title=title,
                notify_type=notify_type(alert.severity),
                body_format=apprise.NotifyFormat.TEXT,
            )
        except Exception as exc:  # a crash inside a third-party plugin: every target failed
            raise RetryableError(f"notify {channel}: {type(exc).__name__}") from exc
        failed = found.size - result.success_count
        if failed:
            raise RetryableError(f"notify {channel}: {failed} of {found.size} targets failed")
