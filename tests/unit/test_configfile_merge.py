"""Merging the sandbox's settings into a config file, as `carehook sandbox --apply` does."""

from __future__ import annotations

import tomllib

from carehook.configfile import merge_tables, render_default_config

SNIPPET = """\
# a comment
[destinations.ehr]
type = "fhir"
url = "http://127.0.0.1:9000/fhir"

[sources.abridge]
# vendor = "abridge"   (keep yours)
api_url = "http://127.0.0.1:9000/abridge"
"""


def test_keys_join_existing_tables_and_new_tables_are_appended() -> None:
    """The existing source keeps its vendor and secrets; the destination is added once."""
    merged = tomllib.loads(merge_tables(render_default_config(), SNIPPET))
    abridge = merged["sources"]["abridge"]
    assert abridge["vendor"] == "abridge"
    assert abridge["secrets"]
    assert abridge["api_url"] == "http://127.0.0.1:9000/abridge"
    assert merged["destinations"]["ehr"]["url"] == "http://127.0.0.1:9000/fhir"


def test_applying_twice_replaces_rather_than_repeats() -> None:
    """A second merge with another port leaves one api_url, the new one, and valid TOML."""
    once = merge_tables(render_default_config(), SNIPPET)
    twice = merge_tables(once, SNIPPET.replace("9000", "9100"))
    assert twice.count("api_url") == 1
    merged = tomllib.loads(twice)
    assert merged["sources"]["abridge"]["api_url"] == "http://127.0.0.1:9100/abridge"
    assert merged["destinations"]["ehr"]["url"] == "http://127.0.0.1:9100/fhir"
