"""The FHIR destination's auth settings: what each mode needs, refused clearly otherwise."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from carehook.settings import DestinationSettings

URL = "https://fhir.example.org/api/FHIR/R4"


def test_smart_backend_needs_a_client_id_only() -> None:
    """No secret and no token URL: the key signs, the token URL is discovered."""
    dest = DestinationSettings(type="fhir", url=URL, auth="smart-backend", client_id="c1")
    assert (dest.signing_alg, dest.conditional_create, dest.token_url) == ("RS384", "auto", None)
    with pytest.raises(ValidationError, match="needs client_id"):
        DestinationSettings(type="fhir", url=URL, auth="smart-backend")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"auth": "bearer"}, "needs token"),
        ({"auth": "client-secret", "client_id": "c"}, "needs client_secret"),
        ({"auth": "smart-backend", "client_id": "c", "signing_alg": "HS256"}, "signing_alg"),
        ({"auth": "smart-backend", "client_id": "c", "conditional_create": "maybe"},
         "conditional_create"),
    ],
)
def test_incomplete_or_unknown_auth_settings_are_refused(
    fields: dict[str, str], message: str
) -> None:
    """Each mode names what it lacks; unknown algorithms and overrides are refused."""
    with pytest.raises(ValidationError, match=message):
        DestinationSettings(type="fhir", url=URL, **fields)  # type: ignore[arg-type]


def test_auth_is_for_fhir_destinations_only() -> None:
    """A webhook destination with auth is a mistake, said so."""
    with pytest.raises(ValidationError, match="fhir destinations only"):
        DestinationSettings(type="webhook", url=URL, secret="s", auth="bearer", token="t")
