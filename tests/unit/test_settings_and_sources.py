"""Settings loading, secret resolution, client addresses behind proxies."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from carehook.errors import ConfigError
from carehook.settings import IPNetwork, load_settings, resolve_secret
from carehook.sources import build_sources, client_address
from carehook.vendors import builtin_vendors


def _cfg(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "carehook.toml"
    path.write_text(text)
    return path


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    """data_dir and a relative sqlite URL are resolved against the config's folder."""
    settings = load_settings(_cfg(tmp_path, 'data_dir = "data"\n'))
    assert settings.data_dir == tmp_path / "data"
    assert settings.storage_url == f"sqlite:///{tmp_path / 'data' / 'carehook.db'}"
    other = load_settings(_cfg(tmp_path, '[storage]\nurl = "sqlite:///x/y.db"\n'))
    assert other.storage_url == f"sqlite:///{tmp_path / 'x' / 'y.db'}"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CAREHOOK_* variables win over the file."""
    monkeypatch.setenv("CAREHOOK_LOG_LEVEL", "warning")
    monkeypatch.setenv("CAREHOOK_STORAGE__URL", "postgresql://postgres@127.0.0.1/x")
    settings = load_settings(_cfg(tmp_path, 'log_level = "debug"\n'))
    assert settings.log_level == "warning"
    assert settings.storage_url == "postgresql://postgres@127.0.0.1/x"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[sources.a]\nvendor = "acme"\n', "sources.a.vendor"),
        ('[sources.a]\nvendor = "abridge"\nmax_body_bytes = 0\n', "sources.a.max_body_bytes"),
        ('[sources.a]\nvendor = "abridge"\nallow_ips = ["not-an-ip"]\n', "not-an-ip"),
        ('[sources."A B"]\nvendor = "abridge"\n', "source name"),
        ('[sources.a]\nvendor = "abridge"\nsecretz = ["x"]\n', "sources.a.secretz"),
        ("this is = = not toml", "not valid TOML"),
        ("[worker]\ningress_priority_seconds = 0\n", "worker.ingress_priority_seconds"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, text: str, names: str) -> None:
    """A bad config raises ConfigError naming what is wrong."""
    with pytest.raises(ConfigError, match=names):
        load_settings(_cfg(tmp_path, text))


def test_config_errors_never_echo_secrets(tmp_path: Path) -> None:
    """A validation error about a source does not repeat its secret values."""
    text = '[sources.a]\nvendor = "abridge"\nsecrets = "TOPSECRET-not-a-list"\n'
    with pytest.raises(ConfigError) as info:
        load_settings(_cfg(tmp_path, text))
    assert "TOPSECRET" not in str(info.value)


def test_env_secrets_resolve_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """env:NAME reads the variable; a missing one is reported by name only."""
    monkeypatch.setenv("HOOK_SECRET", "s3")
    assert resolve_secret("env:HOOK_SECRET", "x") == "s3"
    assert resolve_secret("literal", "x") == "literal"
    with pytest.raises(ConfigError, match="MISSING_VAR"):
        resolve_secret("env:MISSING_VAR", "x")


def test_source_repr_hides_secrets(tmp_path: Path) -> None:
    """Neither settings nor a built source print their secrets."""
    text = '[sources.a]\nvendor = "abridge"\nsecrets = ["S3CR3T"]\n'
    settings = load_settings(_cfg(tmp_path, text))
    source = build_sources(settings, builtin_vendors())["a"]
    assert "S3CR3T" not in repr(settings)
    assert "S3CR3T" not in repr(source)
    assert source.public_path == "/webhooks/a"


NETS = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "want"),
    [
        ("1.2.3.4", "9.9.9.9", NETS, "1.2.3.4"),  # untrusted peer: header ignored
        ("127.0.0.1", "9.9.9.9", [], "127.0.0.1"),  # no trusted proxies: header ignored
        ("127.0.0.1", "9.9.9.9", NETS, "9.9.9.9"),
        ("127.0.0.1", "6.6.6.6, 9.9.9.9, 10.0.0.2", NETS, "9.9.9.9"),  # spoofed left part ignored
        ("127.0.0.1", "10.0.0.3, 10.0.0.2", NETS, "10.0.0.3"),
        ("127.0.0.1", "garbage", NETS, "garbage"),
        ("127.0.0.1", None, NETS, "127.0.0.1"),
    ],
)
def test_client_address_behind_proxies(
    peer: str, xff: str | None, trusted: list[IPNetwork], want: str
) -> None:
    """X-Forwarded-For is read right to left, only when the peer is a trusted proxy."""
    assert client_address(peer, xff, trusted) == want
