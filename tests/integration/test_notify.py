"""AppriseNotifier against real targets on 127.0.0.1: an SMTP server and a JSON webhook receiver.

Email: an ``aiosmtpd`` server collects messages; the channel's URL is
``mailto://127.0.0.1:<port>?from=carehook@example.org&to=oncall@example.org`` (the ``mailto://``
scheme is plain SMTP, no TLS, port 25 unless given; ``mailtos://`` with ``mode=starttls|ssl`` is
the secure form; ``smtp=<host>`` names a relay other than the URL's host).

Slack-style: Apprise's ``slack://`` plugin posts to the fixed ``hooks.slack.com`` (no base-URL
override), so a local stand-in is reached with the generic ``json://`` plugin, whose ``:key=value``
arguments rename or drop payload keys: ``?:message=text&:title=&:version=&:attachments=&:type=``
turns Apprise's ``{"version", "title", "message", "attachments", "type"}`` into Slack's incoming
webhook payload ``{"text": ...}``.
"""

from __future__ import annotations

import email
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Any

import apprise
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from carehook.connectors.notify import AppriseNotifier, render_alert
from carehook.connectors.outbound import OutboundRefused
from carehook.errors import ConfigError, PermanentError, RetryableError
from carehook.workflows.ports import Alert
from loopback import free_port, serve_app

PASSWORD = "pw-CANARY-7f3a9c"
SLACK_ARGS = ":message=text&:title=&:version=&:attachments=&:type="
ALERT = Alert(
    title="Abridge session failed",
    severity="high",
    source="abridge-prod",
    event_type="encounter.session.failed",
    event_pk=42,
    subject="abridge:session:ses_1",
    link="https://carehook.example/events/42",
    facts={"session_id": "ses_1", "error_code": "E_AUDIO"},
)
EXPECTED_LINES = [
    "Abridge session failed",
    "severity: high",
    "source: abridge-prod",
    "event type: encounter.session.failed",
    "event: 42",
    "subject: abridge:session:ses_1",
    "link: https://carehook.example/events/42",
    "error_code: E_AUDIO",
    "session_id: ses_1",
]


@pytest.fixture(autouse=True)
def apprise_loggers() -> Iterator[None]:
    """Start each test with the stdlib defaults for Apprise's loggers and restore them after."""
    loggers = [logging.getLogger(name) for name in ("apprise", "urllib3")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.NOTSET)
        lg.propagate = True
    yield
    for lg, (level, propagate) in zip(loggers, saved, strict=True):
        lg.setLevel(level)
        lg.propagate = propagate


@dataclass
class Mailbox:
    """An aiosmtpd handler keeping every message it accepts."""

    envelopes: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Accept and keep the message."""
        self.envelopes.append(envelope)
        return "250 Message accepted"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    """A plain SMTP server on 127.0.0.1: its port and mailbox."""
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, mailbox
    finally:
        controller.stop()


@dataclass
class Receiver:
    """A JSON webhook receiver: records posts, answers ``status`` (per path, default 200)."""

    status: dict[str, int] = field(default_factory=dict)
    posts: list[tuple[str, Any]] = field(default_factory=list)

    async def hook(self, request: Request) -> Response:
        """Record the JSON body, answer the path's status."""
        self.posts.append((request.url.path, await request.json()))
        code = self.status.get(request.url.path, 200)
        return JSONResponse({"echo": PASSWORD}, status_code=code)


@pytest.fixture
def receiver() -> Receiver:
    """A fresh receiver."""
    return Receiver()


@pytest.fixture
def hostport(receiver: Receiver) -> Iterator[str]:
    """The receiver served on loopback, as ``127.0.0.1:<port>``."""
    app = Starlette(routes=[Route("/{path:path}", receiver.hook, methods=["POST"])])
    with serve_app(app) as url:
        yield url.removeprefix("http://")


def mailto(port: int, userinfo: str = "") -> str:
    """The Apprise URL of a plain-SMTP mailbox on loopback."""
    query = "from=carehook@example.org&to=oncall@example.org"
    return f"mailto://{userinfo}127.0.0.1:{port}?{query}"


def parsed(raw: bytes) -> EmailMessage:
    """The message as an EmailMessage."""
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_email_end_to_end(smtp: tuple[int, Mailbox]) -> None:
    """One plain-text email to the right recipient holding exactly the alert's allowed fields."""
    port, mailbox = smtp
    await AppriseNotifier({"clinical": [mailto(port)]}).notify("clinical", ALERT)
    [envelope] = mailbox.envelopes
    assert envelope.rcpt_tos == ["oncall@example.org"]
    assert envelope.mail_from == "carehook@example.org"
    message = parsed(envelope.original_content or b"")
    assert message["subject"] == "[HIGH] Abridge session failed"
    part = message.get_body(("plain",))
    assert part is not None
    assert part.get_content().splitlines() == EXPECTED_LINES


async def test_slack_style_json(receiver: Receiver, hostport: str) -> None:
    """json:// with payload renames posts Slack's {"text": ...} to a local stand-in."""
    url = f"json://{hostport}/services/T000/B000/XXXX?{SLACK_ARGS}"
    await AppriseNotifier({"ops": [url]}).notify("ops", ALERT)
    assert receiver.posts == [("/services/T000/B000/XXXX", {"text": "\n".join(EXPECTED_LINES)})]


async def test_generic_json_carries_title_and_notify_type(
    receiver: Receiver, hostport: str
) -> None:
    """The default json:// payload has the title, body and the severity's notify type."""
    critical = Alert("Key expiring", "critical", "oe", "api_key.expiring", 7, "openevidence:key:k1")
    await AppriseNotifier({"ops": [f"json://{hostport}/hook"]}).notify("ops", critical)
    [(_, payload)] = receiver.posts
    assert payload["title"] == "[CRITICAL] Key expiring"
    assert payload["type"] == "failure"
    assert payload["message"].splitlines()[0] == "Key expiring"


async def test_failing_target_is_retryable(receiver: Receiver, hostport: str) -> None:
    """A target answering 500 makes notify raise RetryableError counting it; others still got it."""
    receiver.status["/broken"] = 500
    urls = [f"json://{hostport}/fine", f"json://{hostport}/broken"]
    with pytest.raises(RetryableError) as caught:
        await AppriseNotifier({"ops": urls}).notify("ops", ALERT)
    assert str(caught.value) == "notify ops: 1 of 2 targets failed"
    assert sorted(path for path, _ in receiver.posts) == ["/broken", "/fine"]


@pytest.mark.parametrize(
    "bad",
    [
        f"notaschema://user:{PASSWORD}@host",
        f"json://user:{PASSWORD}@127.0.0.1:9/hook?method=BOGUS",
        f"mailto://bob:{PASSWORD}@127.0.0.1:25?mode=weird",
        "",
    ],
)
def test_invalid_url_is_a_config_error_without_the_url(bad: str) -> None:
    """An invalid Apprise URL: ConfigError naming channel and index, never the URL."""
    with pytest.raises(ConfigError) as caught:
        AppriseNotifier({"ops": ["json://127.0.0.1:9/ok", bad]})
    assert str(caught.value) == "channel 'ops': target #1 is not a valid Apprise URL"
    assert PASSWORD not in repr(caught.value.__cause__)


async def test_apprise_logs_never_reach_ours(
    smtp: tuple[int, Mailbox], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Apprise logs a URL's password at TRACE; with the notifier built, no record reaches us."""
    port, mailbox = smtp
    url = mailto(port, f"bob:{PASSWORD}@")
    caplog.set_level(1)
    apprise.Apprise.instantiate(url)  # the canary is real: Apprise alone logs the password
    assert PASSWORD in caplog.text
    caplog.clear()
    with capture_logs() as ours:
        notifier = AppriseNotifier({"clinical": [url]})  # this server offers no AUTH: login fails
        with pytest.raises(RetryableError) as caught:
            await notifier.notify("clinical", ALERT)
    out, err = capfd.readouterr()
    assert [r.name for r in caplog.records if r.name != "mail.log"] == []  # mail.log: the server
    assert PASSWORD not in out + err + repr(ours) + str(caught.value)
    assert mailbox.envelopes == []


async def test_private_targets_refused_when_not_allowed(
    receiver: Receiver, hostport: str, smtp: tuple[int, Mailbox]
) -> None:
    """allow_private=False refuses loopback webhook and SMTP hosts before anything is sent."""
    for url in (f"json://{hostport}/hook", mailto(smtp[0])):
        notifier = AppriseNotifier({"ops": [url]}, allow_private=False)
        with pytest.raises(OutboundRefused, match="127"):
            await notifier.notify("ops", ALERT)
    assert receiver.posts == []
    assert smtp[1].envelopes == []


async def test_configured_and_unknown_channels() -> None:
    """configured() only for channels with targets; notifying an unconfigured one is permanent."""
    notifier = AppriseNotifier({"ops": ["json://127.0.0.1:9/hook"], "clinical": []})
    assert notifier.configured("ops")
    assert not notifier.configured("clinical")
    assert not notifier.configured("requester")
    with pytest.raises(PermanentError, match="not configured"):
        await notifier.notify("clinical", ALERT)


def test_values_cannot_forge_lines() -> None:
    """Newlines inside a value are flattened, so a subject cannot add a line of its own."""
    sneaky = Alert("t", "info", "s", "e", 1, "abridge:session:x\nlink: https://evil.example")
    _, body = render_alert(sneaky)
    assert [line for line in body.splitlines() if line.startswith("link:")] == []
    assert "subject: abridge:session:x link: https://evil.example" in body.splitlines()
