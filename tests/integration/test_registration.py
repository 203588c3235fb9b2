"""Registering endpoints with Abridge, OpenEvidence and Healthie: the registration service and
the registrars the composition root builds, against the sandbox's fakes on 127.0.0.1.

Secrets land in a real config file; a delivery signed with the secret the vendor holds is then
accepted by a real gateway started from that file.
"""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carehook import registration as reg
from carehook.configfile import source_secrets
from carehook.envelope import SignedRequest
from carehook.errors import ConfigError, PermanentError
from carehook.sandbox.app import Sandbox, build_sandbox
from carehook.services import build_registrar
from carehook.settings import load_settings
from carehook.sources import build_source
from carehook.vendors import builtin_vendors
from loopback import serve_app

from .conftest import start_gateway

PUBLIC = "https://hooks.example.org"


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, str]]:
    """The sandbox served on loopback, and its base URL."""
    box = build_sandbox()
    with serve_app(box.app) as url:
        yield box, url


def _config(tmp_path: Path, base: str, org: str = "sandbox-org") -> Path:
    path = tmp_path / "carehook.toml"
    path.write_text(f"""\
data_dir = "."
public_url = "{PUBLIC}"
[worker]
enabled = false
[sources.abridge]
vendor = "abridge"
secrets = ["abridge-old-secret-0001", "abridge-new-secret-0002"]
api_url = "{base}/abridge"
api_token = "sandbox-abridge-token"
org_id = "{org}"
api_allow_private = true
[sources.openevidence]
vendor = "openevidence"
api_url = "{base}/openevidence"
api_token = "env:OE_TOKEN"
api_allow_private = true
[sources.healthie]
vendor = "healthie"
secrets = ["healthie-first-secret"]
api_url = "{base}/healthie/graphql"
api_key = "sandbox-healthie-api-key"
api_allow_private = true
[sources.nabla]
vendor = "nabla"
""")
    return path


def _register(config: Path, source: str, events: tuple[str, ...] | None = None
              ) -> reg.Registration:  # fmt: skip
    settings = load_settings(config)

    async def go() -> reg.Registration:
        registrar, held = build_registrar(settings, source)
        assert registrar is not None
        try:
            url = reg.endpoint_url(settings, source, None)
            return await reg.register(registrar, config, source, url,
                                      events or reg.default_events(settings, source))
        finally:
            await held.aclose()

    return asyncio.run(go())


def test_abridge_gets_the_newest_secret_with_bearer_and_org(tmp_path: Path,
                                                            sandbox: tuple[Sandbox, str]) -> None:
    """POST {api_url}/webhooks with the brief's body; the vendor signs with secrets[1]."""
    box, base = sandbox
    config = _config(tmp_path, base)
    done = _register(config, "abridge")
    assert (done.secret_index, done.added) == (1, False)
    [(webhook_id, held)] = box.abridge.webhooks.webhooks.items()
    assert done.webhook.webhook_id == webhook_id
    assert held["url"] == f"{PUBLIC}/webhooks/abridge"
    assert held["events"] == list(builtin_vendors()["abridge"].event_types)
    assert box.abridge.webhooks.secrets[webhook_id] == "abridge-new-secret-0002"
    assert source_secrets(config, "abridge") == ["abridge-old-secret-0001",
                                                 "abridge-new-secret-0002"]  # fmt: skip


def test_abridge_refuses_a_wrong_organisation(tmp_path: Path,
                                              sandbox: tuple[Sandbox, str]) -> None:  # fmt: skip
    """The fake checks X-Org-Id: a wrong one is a permanent 403, the secret not in the message."""
    _box, base = sandbox
    config = _config(tmp_path, base, org="someone-else")
    with pytest.raises(PermanentError) as caught:
        _register(config, "abridge")
    assert str(caught.value) == "abridge create webhook: 403"


def test_openevidence_without_secrets_gets_a_fresh_one_written_0600(
    tmp_path: Path, sandbox: tuple[Sandbox, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /v1/webhooks; the source had no secret: one is generated, kept, and sent."""
    monkeypatch.setenv("OE_TOKEN", "sandbox-openevidence-token")
    box, base = sandbox
    config = _config(tmp_path, base)
    done = _register(config, "openevidence", ("query.completed", "review.flagged"))
    assert (done.secret_index, done.added) == (0, True)
    [secret] = source_secrets(config, "openevidence")
    assert box.openevidence.webhooks.secrets[done.webhook.webhook_id] == secret
    assert len(secret) >= 32
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    listed = asyncio.run(_list(config, "openevidence"))
    assert [(w.webhook_id, w.events, w.enabled) for w in listed] == [
        (done.webhook.webhook_id, ("query.completed", "review.flagged"), True)]
    asyncio.run(_delete(config, "openevidence", done.webhook.webhook_id))
    assert box.openevidence.webhooks.webhooks == {}


def test_openevidence_with_a_wrong_token_is_refused(
    tmp_path: Path, sandbox: tuple[Sandbox, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """401 from the vendor is permanent; nothing was registered."""
    monkeypatch.setenv("OE_TOKEN", "wrong")
    box, base = sandbox
    with pytest.raises(PermanentError, match=r"^openevidence create webhook: 401$"):
        _register(_config(tmp_path, base), "openevidence")
    assert box.openevidence.webhooks.webhooks == {}


async def _list(config: Path, source: str) -> list[object]:
    registrar, held = build_registrar(load_settings(config), source)
    assert registrar is not None
    try:
        return list(await registrar.list())
    finally:
        await held.aclose()


async def _delete(config: Path, source: str, webhook_id: str) -> None:
    registrar, held = build_registrar(load_settings(config), source)
    assert registrar is not None
    try:
        await registrar.delete(webhook_id)
    finally:
        await held.aclose()


async def _rotate(config: Path, source: str, webhook_id: str) -> reg.Registration:
    registrar, held = build_registrar(load_settings(config), source)
    assert registrar is not None
    try:
        return await reg.rotate(registrar, config, source, webhook_id)
    finally:
        await held.aclose()


def _healthie_delivery(config: Path, secret: str) -> tuple[bytes, dict[str, str]]:
    """A transcript_available delivery signed as Healthie signs it, with ``secret``."""
    settings = load_settings(config)
    src = build_source("healthie", settings.sources["healthie"], builtin_vendors())
    payload = src.vendor.sample("appointment.transcript_available", datetime.now(UTC), 3)
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json"}
    headers.update(src.scheme.sign(SignedRequest("POST", src.public_path, "", headers, body),
                                   secret, time.time()))  # fmt: skip
    return body, headers


def test_healthie_secret_is_added_rotated_and_accepted_by_the_gateway(
    tmp_path: Path, sandbox: tuple[Sandbox, str]
) -> None:
    """createWebhook's secret is appended; a delivery signed with it passes a gateway started
    from the config; after rotation both the old and the new secret pass until one is retired."""
    box, base = sandbox
    config = _config(tmp_path, base)
    done = _register(config, "healthie")
    hook = box.healthie.webhooks.by_id[done.webhook.webhook_id]
    assert (hook.url, hook.should_retry, hook.is_enabled) == (
        f"{PUBLIC}/webhooks/healthie", True, True)
    assert (done.secret_index, done.added) == (1, True)
    assert source_secrets(config, "healthie") == ["healthie-first-secret", hook.secrets[0]]
    rotated = asyncio.run(_rotate(config, "healthie", hook.id))
    assert rotated.secret_index == 2
    assert source_secrets(config, "healthie")[1:] == hook.secrets  # old kept, new appended
    for gw in start_gateway(config):
        for secret in hook.secrets:
            body, headers = _healthie_delivery(config, secret)
            response = gw.post("healthie", body, headers)
            assert response.status_code == 200, response.text
        body, headers = _healthie_delivery(config, "never-registered-secret")
        assert gw.post("healthie", body, headers).status_code == 401


def test_nabla_has_no_registrar_and_prints_console_steps(tmp_path: Path,
                                                        sandbox: tuple[Sandbox, str]) -> None:
    """Nabla is console only: the steps name the URL, the events and the secrets command."""
    _box, base = sandbox
    config = _config(tmp_path, base)
    settings = load_settings(config)
    registrar, _held = build_registrar(settings, "nabla")
    assert registrar is None
    url = reg.endpoint_url(settings, "nabla", None)
    steps = reg.console_steps("nabla", url, reg.default_events(settings, "nabla"))
    assert f"URL: {PUBLIC}/webhooks/nabla" in steps
    assert "generate_note_async.succeeded" in steps
    assert "carehook secrets add nabla --stdin" in steps


def test_the_endpoint_url_appends_the_sources_path_only_to_a_bare_base(tmp_path: Path) -> None:
    """A base URL gets /webhooks/<source>; a URL with a path is taken as the endpoint."""
    config = _config(tmp_path, "http://127.0.0.1:1")
    settings = load_settings(config)
    assert reg.endpoint_url(settings, "healthie", "https://gw.example/") == (
        "https://gw.example/webhooks/healthie")
    assert reg.endpoint_url(settings, "healthie", "https://gw.example/edge/healthie") == (
        "https://gw.example/edge/healthie")
    with pytest.raises(ConfigError, match="http"):
        reg.endpoint_url(settings, "healthie", "ftp://gw.example")
