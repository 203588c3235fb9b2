"""The connectors bootstrap builds from settings: guards on by default, opened up only when the
config says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from carehook.connectors.outbound import OutboundRefused
from carehook.errors import ConfigError
from carehook.services import build_services
from carehook.settings import load_settings
from carehook.workflows.ports import Alert

ALERT = Alert("t", "high", "abridge", "encounter.session.failed", 1, "abridge:session:s")


def _settings(tmp_path: Path, extra: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "carehook.toml"
    path.write_text('data_dir = "."\n' + extra)
    return load_settings(path)


async def test_a_loopback_channel_is_refused_unless_notifications_allow_private(
    tmp_path: Path,
) -> None:
    """Without [notifications] allow_private a loopback target is refused before any send."""
    settings = _settings(tmp_path, '[channels]\nops = ["json://127.0.0.1:9/x"]\n')
    built = build_services(settings)
    assert built.services.notifier is not None
    with pytest.raises(OutboundRefused):
        await built.services.notifier.notify("ops", ALERT)
    await built.aclose()


async def test_a_loopback_destination_is_refused_unless_allow_private(tmp_path: Path) -> None:
    """A webhook destination on 127.0.0.1 without allow_private refuses to connect."""
    settings = _settings(tmp_path, '[destinations.cache]\ntype = "webhook"\n'
                         'url = "http://127.0.0.1:9/hook"\nsecret = "whsec_dGVzdA=="\n')
    built = build_services(settings)
    with pytest.raises(OutboundRefused):
        await built.services.destinations["cache"].deliver("m1", {"a": 1})
    await built.aclose()


def test_an_api_url_without_its_credential_is_a_config_error(tmp_path: Path) -> None:
    """api_url without api_token names the missing key, never a value."""
    settings = _settings(tmp_path, '[sources.abridge]\nvendor = "abridge"\n'
                         'secrets = ["s"]\napi_url = "https://api.abridge.example"\n')
    with pytest.raises(ConfigError, match="api_token is missing"):
        build_services(settings)


def test_an_env_secret_that_is_not_set_is_named(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """token = "env:X" with X unset: the error names X."""
    monkeypatch.delenv("NO_SUCH_EHR_TOKEN", raising=False)
    settings = _settings(tmp_path, '[destinations.ehr]\ntype = "fhir"\n'
                         'url = "https://fhir.example"\ntoken = "env:NO_SUCH_EHR_TOKEN"\n')
    with pytest.raises(ConfigError, match="NO_SUCH_EHR_TOKEN"):
        build_services(settings)
