"""A source's secrets in the config file: appended, retired, kept as written, always 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from carehook.configfile import add_secret, retire_secret, source_secret_ids, source_secrets
from carehook.errors import ConfigError
from carehook.settings import load_settings

CONFIG = """\
# my hand-written config
data_dir = "."

[sources.abridge]
vendor = "abridge"   # the vendor
secrets = ["first-secret-0000", "env:ABRIDGE_NEXT"]
# keep this comment
tolerance_seconds = 120

[sources.nabla]
vendor = "nabla"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config with an Abridge source of two secrets and a Nabla source with none."""
    path = tmp_path / "carehook.toml"
    path.write_text(CONFIG)
    path.chmod(0o644)
    return path


def test_add_appends_so_existing_indexes_keep_their_meaning(config: Path) -> None:
    """The new secret is the last index; the others, env: references and comments are kept."""
    assert add_secret(config, "abridge", "brand-new-secret-1") == 2
    assert source_secrets(config, "abridge") == [
        "first-secret-0000", "env:ABRIDGE_NEXT", "brand-new-secret-1"]
    text = config.read_text()
    assert "# keep this comment" in text
    assert "# my hand-written config" in text
    assert "tolerance_seconds = 120" in text
    assert load_settings(config).sources["abridge"].tolerance_seconds == 120


def test_adding_a_secret_twice_keeps_it_once(config: Path) -> None:
    """Re-adding an existing secret returns its index and writes nothing new."""
    assert add_secret(config, "abridge", "first-secret-0000") == 0
    assert len(source_secrets(config, "abridge")) == 2


def test_a_source_without_secrets_gets_its_first(config: Path) -> None:
    """``secrets`` is created under the source's table."""
    assert add_secret(config, "nabla", "nabla-console-secret") == 0
    assert load_settings(config).sources["nabla"].secrets == ["nabla-console-secret"]


def test_files_written_are_private(config: Path) -> None:
    """The rewritten config is mode 0600 whatever it was before (it holds secrets)."""
    add_secret(config, "abridge", "brand-new-secret-1")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert [p.name for p in config.parent.iterdir()] == ["carehook.toml"]  # no temp file left


def test_retire_keeps_every_other_id_and_no_id_is_given_twice(config: Path) -> None:
    """Retiring id 0 leaves the others their ids (the store's events keep their meaning); the
    retired id is listed and never given again, not even after the newest id is retired."""
    assert add_secret(config, "abridge", "brand-new-secret-1") == 2
    retire_secret(config, "abridge", 0)
    assert source_secrets(config, "abridge") == ["env:ABRIDGE_NEXT", "brand-new-secret-1"]
    have = source_secret_ids(config, "abridge")
    assert (have.ids, have.retired) == ([1, 2], [0])
    assert add_secret(config, "abridge", "another-secret-3") == 3
    retire_secret(config, "abridge", 3)
    assert add_secret(config, "abridge", "another-secret-4") == 4
    assert "# keep this comment" in config.read_text()
    settings = load_settings(config).sources["abridge"]
    assert (settings.ids(), settings.retired_secret_ids) == ([1, 2, 4], [0, 3])
    assert add_secret(config, "abridge", "brand-new-secret-1") == 2  # already there: its id


def test_the_last_secret_and_unknown_indexes_cannot_be_retired(config: Path) -> None:
    """A source left without secrets would refuse every delivery: refused, file unchanged."""
    retire_secret(config, "abridge", 1)
    before = config.read_text()
    with pytest.raises(ConfigError, match="only secret"):
        retire_secret(config, "abridge", 0)
    with pytest.raises(ConfigError, match=r"has no secret 5 \(its ids: 0\)"):
        retire_secret(config, "abridge", 5)
    assert config.read_text() == before


def test_unknown_sources_and_bad_secrets_are_refused(config: Path) -> None:
    """No table is invented; a secret with spaces or newlines is refused."""
    with pytest.raises(ConfigError, match=r"no \[sources.missing\]"):
        add_secret(config, "missing", "x" * 20)
    for bad in ("", " padded ", "two\nlines"):
        with pytest.raises(ConfigError, match="one line"):
            add_secret(config, "abridge", bad)


def test_a_multi_line_secrets_array_is_refused_not_mangled(tmp_path: Path) -> None:
    """carehook rewrites one-line arrays only; anything else is left for a human."""
    path = tmp_path / "carehook.toml"
    text = '[sources.a]\nvendor = "abridge"\nsecrets = [\n  "one-secret-000000",\n]\n'
    path.write_text(text)
    with pytest.raises(ConfigError, match="multi-line"):
        add_secret(path, "a", "two-secret-000000")
    assert path.read_text() == text


def test_quotes_and_backslashes_survive(config: Path) -> None:
    """A vendor's secret with TOML-special characters reads back exactly."""
    odd = 'se"cr\\et=with/chars'
    add_secret(config, "abridge", odd)
    assert source_secrets(config, "abridge")[-1] == odd


def test_hand_edited_ids_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    """One id per secret, ids distinct and never a retired one: anything else is a config
    error naming the key, and ``secrets add`` refuses to guess."""
    base = '[sources.a]\nvendor = "abridge"\nsecrets = ["one-secret-000000", "two-secret-000000"]\n'
    path = tmp_path / "carehook.toml"
    for extra, names in (("secret_ids = [0]\n", "secret_ids"),
                         ("secret_ids = [1, 1]\n", "distinct"),
                         ("secret_ids = [0, 1]\nretired_secret_ids = [1]\n", "distinct")):
        path.write_text(base + extra)
        with pytest.raises(ConfigError, match=names):
            load_settings(path)
    path.write_text(base + "secret_ids = [7]\n")
    with pytest.raises(ConfigError, match="secret_ids has 1 ids for 2 secrets"):
        add_secret(path, "a", "three-secret-00000")
    assert path.read_text() == base + "secret_ids = [7]\n"
