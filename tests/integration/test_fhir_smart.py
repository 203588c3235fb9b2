"""SMART Backend Services end to end on loopback: the gateway publishes its keys at
/.well-known/jwks.json, the sandbox FHIR server's token endpoint fetches that JWKS and verifies
each client assertion, the FHIR client signs them (RS384 and ES384) and uses the tokens."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.routing import Mount
from structlog.testing import capture_logs

from carehook.connectors.fhir.client import FhirClient
from carehook.connectors.fhir.keys import Alg, KeyStore
from carehook.connectors.fhir.smart import JWT_BEARER, SmartBackend, sign_assertion
from carehook.errors import ConfigError, PermanentError
from carehook.sandbox.fhir import FhirServer
from loopback import serve_app

from .conftest import NO_WORKER, Gateway, start_gateway, write_config

CLIENT_ID = "carehook-test-client"
SYSTEM = "urn:carehook:abridge:note"


@dataclass
class Smart:
    """A gateway (publishing keys) and a FHIR server trusting its JWKS."""

    gw: Gateway
    keys: KeyStore
    fhir: FhirServer
    base: str

    @property
    def token_url(self) -> str:
        """The sandbox's token endpoint."""
        return f"{self.base}/auth/token"

    def client(self, http: httpx.AsyncClient, alg: Alg = "RS384") -> FhirClient:
        """A FHIR client authenticating with the destination ``ehr``'s key of ``alg``."""
        smart = SmartBackend(CLIENT_ID, lambda: self.keys.signing_key("ehr", alg),
                             jku=f"{self.gw.url}/.well-known/jwks.json",
                             scope="system/DocumentReference.crus")  # fmt: skip
        return FhirClient(http, self.base, oauth=smart)

    def token(self, assertion: str) -> httpx.Response:
        """POST one assertion to the token endpoint."""
        form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                "client_assertion": assertion}  # fmt: skip
        return httpx.post(self.token_url, data=form, timeout=10)

    def assertion(self, alg: Alg = "RS384", **kw: Any) -> str:
        """An assertion signed by the active ``alg`` key (keyword arguments override)."""
        info, key = self.keys.signing_key("ehr", alg)
        args: dict[str, Any] = {"client_id": CLIENT_ID, "audience": self.token_url,
                                "jku": f"{self.gw.url}/.well-known/jwks.json",
                                "now": time.time()}  # fmt: skip
        args.update(kw)
        return sign_assertion(key, info.kid, alg, **args)


@pytest.fixture
def smart(tmp_path: Path) -> Iterator[Smart]:
    """A gateway with one RS384 and one ES384 key, and a FHIR server registered to its JWKS."""
    extra = '[destinations.ehr]\ntype = "fhir"\nurl = "http://127.0.0.1:1/fhir"\n' \
            f'auth = "smart-backend"\nclient_id = "{CLIENT_ID}"\n'  # fmt: skip
    config = write_config(tmp_path / "carehook.toml", None, NO_WORKER + extra)
    keys = KeyStore(tmp_path / "keys")
    keys.new("ehr", "RS384")
    keys.new("ehr", "ES384")
    fhir = FhirServer()
    app = Starlette(routes=[Mount("/fhir", app=fhir.app)])
    for gw in start_gateway(config):
        fhir.register_client(CLIENT_ID, f"{gw.url}/.well-known/jwks.json")
        with serve_app(app) as url:
            yield Smart(gw, keys, fhir, f"{url}/fhir")


def _published(smart: Smart) -> set[str]:
    return {k["kid"] for k in httpx.get(f"{smart.gw.url}/.well-known/jwks.json").json()["keys"]}


def _doc(value: str) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current",
            "identifier": [{"system": SYSTEM, "value": value}],
            "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                        "data": "aGk="}}]}  # fmt: skip


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
async def test_a_signed_assertion_gets_a_token_that_writes_and_is_reused(
    smart: Smart, alg: Alg
) -> None:
    """The token URL is discovered, the assertion verifies, the token is cached for writes."""
    seen: list[dict[str, str]] = []

    async def spy(request: httpx.Request) -> None:
        if request.url.path.endswith("/auth/token"):
            seen.append(dict(parse_qsl(request.content.decode())))

    async with httpx.AsyncClient(event_hooks={"request": [spy]}) as http:
        client = smart.client(http, alg)
        stored, created = await client.create(_doc("n-1"))
        await client.create(_doc("n-2"))
    assert created
    assert stored["id"]
    assert len(seen) == 1  # one token for both writes
    form = seen[0]
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == JWT_BEARER
    assert form["scope"] == "system/DocumentReference.crus"
    compact = jws.extract_compact(form["client_assertion"].encode())
    header, claims = compact.headers(), json.loads(compact.payload)
    info, _ = smart.keys.signing_key("ehr", alg)
    assert header == {"alg": alg, "kid": info.kid, "typ": "JWT",
                      "jku": f"{smart.gw.url}/.well-known/jwks.json"}  # fmt: skip
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == smart.token_url
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert claims["jti"]


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"now": time.time() - 900}, "expired"),
        ({"audience": "https://elsewhere.example/token"}, "wrong aud"),
        ({"lifetime": 3600}, "exp is more than 5 minutes ahead"),
        ({"jku": "https://attacker.example/jwks.json"}, "jku is not the registered JWKS URL"),
    ],
)
def test_the_token_endpoint_refuses_bad_assertions(
    smart: Smart, override: dict[str, Any], reason: str
) -> None:
    """Expired, wrong-audience, too-long-lived or foreign-jku assertions get invalid_client."""
    response = smart.token(smart.assertion(**override))
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_client", "error_description": reason}


def test_a_replayed_jti_is_refused(smart: Smart) -> None:
    """The same assertion twice: the second is refused."""
    assertion = smart.assertion()
    assert smart.token(assertion).status_code == 200
    again = smart.token(assertion)
    assert (again.status_code, again.json()["error_description"]) == (400, "replayed jti")


def test_an_unknown_kid_is_refused(smart: Smart) -> None:
    """A key the gateway does not publish cannot get a token, even with a valid signature."""
    stray = ECKey.generate_key("P-384")
    assertion = sign_assertion(stray, stray.thumbprint(), "ES384", client_id=CLIENT_ID,
                               audience=smart.token_url, jku=None, now=time.time())  # fmt: skip
    response = smart.token(assertion)
    assert (response.status_code, response.json()["error_description"]) == (400, "unknown kid")


def test_a_signature_by_another_key_under_a_published_kid_is_refused(smart: Smart) -> None:
    """Forging a published kid with another key fails verification."""
    info, _ = smart.keys.signing_key("ehr", "ES384")
    stray = ECKey.generate_key("P-384")
    assertion = sign_assertion(stray, info.kid, "ES384", client_id=CLIENT_ID,
                               audience=smart.token_url, jku=None, now=time.time())  # fmt: skip
    response = smart.token(assertion)
    assert (response.status_code, response.json()["error_description"]) == (400, "bad signature")


def test_rotation_publishes_the_new_key_before_use_and_retires_the_old(smart: Smart) -> None:
    """new key → in the JWKS, old still signs and verifies → retire old → new signs, old refused."""
    old, _ = smart.keys.signing_key("ehr", "RS384")
    new = smart.keys.new("ehr", "RS384")
    published = _published(smart)
    assert {old.kid, new.kid} <= published
    assert smart.keys.signing_key("ehr", "RS384")[0].kid == old.kid  # the new one waits
    old_assertion = smart.assertion()  # signed by the old key
    assert smart.token(smart.assertion()).status_code == 200
    early = sign_assertion(smart.keys.private_key(new), new.kid, "RS384", client_id=CLIENT_ID,
                           audience=smart.token_url, jku=None, now=time.time())  # fmt: skip
    assert smart.token(early).status_code == 200  # published before use: it already verifies
    smart.keys.retire(old.kid)
    published = _published(smart)
    assert old.kid not in published
    assert new.kid in published
    assert smart.keys.signing_key("ehr", "RS384")[0].kid == new.kid
    assert smart.token(smart.assertion()).status_code == 200  # signed by the new key
    refused = smart.token(old_assertion)
    assert (refused.status_code, refused.json()["error_description"]) == (400, "unknown kid")


async def test_a_revoked_token_is_refreshed_once_on_401(smart: Smart) -> None:
    """The server forgets its tokens: the client gets a 401, fetches a new token, succeeds."""
    async with httpx.AsyncClient() as http:
        client = smart.client(http)
        await client.create(_doc("n-1"))
        smart.fhir.issuer.revoke_all()
        await client.create(_doc("n-2"))
    tokens = [r for r in smart.fhir.requests if r == ("POST", "/auth/token")]
    assert len(tokens) == 2
    assert len(smart.fhir.resources("DocumentReference")) == 2


def test_a_key_readable_by_others_is_refused(smart: Smart, tmp_path: Path) -> None:
    """Keys are written 0600; a key file opened to others is never used."""
    info, _ = smart.keys.signing_key("ehr", "RS384")
    pem = tmp_path / "keys" / f"{info.kid}.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
    pem.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        smart.keys.signing_key("ehr", "RS384")
    assert info.kid not in _published(smart)  # nor is it published


def test_the_jwks_holds_public_parts_only(smart: Smart) -> None:
    """No private member (d, p, q, dp, dq, qi) is ever served."""
    body = httpx.get(f"{smart.gw.url}/.well-known/jwks.json").json()
    assert {k["alg"] for k in body["keys"]} == {"RS384", "ES384"}
    for key in body["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
        assert key["use"] == "sig"



async def test_no_assertion_or_access_token_reaches_a_log_or_an_error(smart: Smart) -> None:
    """Tokens and assertions are credentials: absent from logs and from a refusal's message."""
    sent: list[str] = []

    async def spy(request: httpx.Request) -> None:
        sent.append(request.content.decode(errors="replace"))

    with capture_logs() as logs:
        async with httpx.AsyncClient(event_hooks={"request": [spy]}) as http:
            await smart.client(http).create(_doc("n-1"))
            wrong = SmartBackend(CLIENT_ID, lambda: smart.keys.signing_key("ehr", "RS384"),
                                 jku=f"{smart.gw.url}/.well-known/jwks.json",
                                 token_url=f"{smart.base}/auth/token?x=1")  # wrong aud
            with pytest.raises(PermanentError) as refused:
                await FhirClient(http, smart.base, oauth=wrong).create(_doc("n-2"))
    assert str(refused.value) == "fhir create DocumentReference: oauth token: 400 (invalid_client)"
    secrets = list(smart.fhir.issuer.scopes) + [
        dict(parse_qsl(body))["client_assertion"] for body in sent if "client_assertion" in body]
    assert len(secrets) == 3  # one access token, two assertions
    blob = json.dumps(logs, default=str) + str(refused.value) + repr(wrong)
    for secret in secrets:
        assert secret not in blob
