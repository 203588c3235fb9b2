"""Start-up checks: secrets that cannot be decoded, unused FHIR destinations."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from carehook.errors import ConfigError
from carehook.preflight import check_source_secrets, preflight, unused_destinations
from carehook.settings import Settings

CANARY = "base64:Canary!!not-base64"


def _settings(**kw: object) -> Settings:
    return Settings.model_validate(kw)


def test_a_healthie_base64_secret_that_does_not_decode_names_the_setting_only() -> None:
    """`base64:` + garbage for Healthie: ConfigError naming source and index, not the value."""
    settings = _settings(sources={"h": {"vendor": "healthie", "secrets": ["ok", CANARY]}})
    with pytest.raises(ConfigError) as caught:
        check_source_secrets(settings)
    assert str(caught.value).startswith("sources.h.secrets[1]: not a valid healthie secret")
    assert "Canary" not in str(caught.value)


def test_secrets_of_schemes_without_encoded_keys_are_only_resolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any string is an Abridge key; an unset ``env:`` variable is still an error."""
    monkeypatch.delenv("CAREHOOK_TEST_UNSET", raising=False)
    check_source_secrets(_settings(sources={"a": {"vendor": "abridge", "secrets": ["x y z"]}}))
    unset = {"vendor": "abridge", "secrets": ["env:CAREHOOK_TEST_UNSET"]}
    settings = _settings(sources={"a": unset})
    with pytest.raises(ConfigError, match=r"sources\.a\.secrets\[0\]: environment variable"):
        check_source_secrets(settings)


def test_a_fhir_destination_not_named_ehr_is_reported_unused() -> None:
    """Only `ehr` is written to by workflows; another FHIR destination is a warning."""
    fhir = {"type": "fhir", "url": "https://fhir.example/r4"}
    settings = _settings(destinations={"ehr": fhir, "emr": fhir})
    assert unused_destinations(settings) == ["emr"]
    with capture_logs() as logs:
        assert preflight(settings, services=False) is None
    assert [(e["event"], e["setting"]) for e in logs] == [
        ("config.unused_destination", "destinations.emr")
    ]
