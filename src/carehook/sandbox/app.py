"""The sandbox app: fake Abridge and Healthie APIs and an in-memory FHIR server, in one ASGI app.

::

    /abridge/v1/...        FakeAbridgeApi   (REST; Bearer token + X-Org-Id; /abridge/webhooks)
    /healthie/graphql      FakeHealthieApi  (the GraphQL endpoint itself; Basic API key)
    /healthie/files/...    the WebVTT files its transcripts' expiring_url links point to
    /openevidence/v1/...   FakeOpenEvidenceApi (webhook registration; Bearer token)
    /fhir/...              FhirServer       (FHIR R4; Bearer token)
    /                      a JSON index of the three

The credentials are fixed and plainly fake (:class:`SandboxCredentials`), so a gateway config
pointing at the sandbox can be printed once and pasted (:func:`config_snippet`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from carehook.sandbox.abridge import FakeAbridgeApi
from carehook.sandbox.fhir import FhirServer
from carehook.sandbox.healthie import FakeHealthieApi
from carehook.sandbox.openevidence import FakeOpenEvidenceApi


@dataclass(frozen=True, slots=True)
class SandboxCredentials:
    """The sandbox's fake credentials; never valid anywhere else."""

    abridge_token: str = "sandbox-abridge-token"  # noqa: S105 (fake, printed on purpose)
    abridge_org_id: str = "sandbox-org"
    healthie_api_key: str = "sandbox-healthie-api-key"
    fhir_token: str = "sandbox-fhir-token"  # noqa: S105 (fake, printed on purpose)
    openevidence_token: str = "sandbox-openevidence-token"  # noqa: S105 (fake, on purpose)


@dataclass(frozen=True, slots=True)
class SandboxUrls:
    """Where each fake lives under a base URL such as ``http://127.0.0.1:9000``."""

    abridge: str
    healthie: str
    fhir: str
    openevidence: str = ""

    @classmethod
    def under(cls, base_url: str) -> SandboxUrls:
        """The three URLs below ``base_url``."""
        base = base_url.rstrip("/")
        return cls(f"{base}/abridge", f"{base}/healthie/graphql", f"{base}/fhir",
                   f"{base}/openevidence")


@dataclass(frozen=True)
class Sandbox:
    """The combined app and its three fakes (reach them for test hooks)."""

    app: Starlette
    abridge: FakeAbridgeApi
    healthie: FakeHealthieApi
    fhir: FhirServer
    credentials: SandboxCredentials = field(default_factory=SandboxCredentials)
    openevidence: FakeOpenEvidenceApi = field(
        default_factory=lambda: FakeOpenEvidenceApi(SandboxCredentials().openevidence_token))

    def config_snippet(self, base_url: str) -> str:
        """The TOML a gateway needs to use this sandbox at ``base_url``."""
        return config_snippet(base_url, self.credentials)


def build_sandbox(credentials: SandboxCredentials | None = None) -> Sandbox:
    """The three fakes, with ``credentials`` (default: the fixed sandbox ones), in one app."""
    creds = credentials or SandboxCredentials()
    abridge = FakeAbridgeApi(creds.abridge_token, creds.abridge_org_id)
    healthie = FakeHealthieApi(creds.healthie_api_key)
    fhir = FhirServer(token=creds.fhir_token)
    openevidence = FakeOpenEvidenceApi(creds.openevidence_token)

    async def index(request: Request) -> Response:
        urls = SandboxUrls.under(str(request.base_url))
        return JSONResponse({"sandbox": "carehook", "abridge": urls.abridge,
                             "healthie": urls.healthie, "fhir": urls.fhir,
                             "openevidence": urls.openevidence})  # fmt: skip

    app = Starlette(routes=[
        Route("/", index),
        Mount("/abridge", app=abridge),
        # a Route, not a Mount: the endpoint is exactly /healthie/graphql (a Mount would
        # redirect it to /healthie/graphql/, and a POST does not follow redirects)
        Route("/healthie/graphql", endpoint=healthie, methods=["POST"]),
        Mount("/healthie/files", app=healthie.files),
        Mount("/openevidence", app=openevidence),
        Mount("/fhir", app=fhir.app),
    ])  # fmt: skip
    return Sandbox(app, abridge, healthie, fhir, creds, openevidence)


_HEADER = """\
# carehook sandbox at {base}: fake APIs and fake credentials, for trying carehook only.
# To use it, edit your carehook.toml:
#  - paste [destinations.ehr] as it is (replacing yours, if you have one);
#  - [sources.abridge], [sources.healthie] and [sources.openevidence] exist already (`carehook
#    init` wrote them) and TOML refuses a table written twice: copy only the lines under those
#    headers into them.
"""


def config_snippet(base_url: str, credentials: SandboxCredentials | None = None) -> str:
    """TOML pointing a gateway's ``ehr`` destination and Abridge/Healthie sources at the sandbox.

    Every line parses as TOML on its own (``vendor`` is a comment, as the user's table has it).
    """
    creds = credentials or SandboxCredentials()
    urls = SandboxUrls.under(base_url)
    q = json.dumps  # a JSON string is a valid TOML basic string
    return _HEADER.format(base=base_url.rstrip("/")) + f"""
[destinations.ehr]
type = "fhir"
url = {q(urls.fhir)}
token = {q(creds.fhir_token)}
allow_private = true

[sources.abridge]
# vendor = "abridge"   (and your secrets: keep them)
api_url = {q(urls.abridge)}
api_token = {q(creds.abridge_token)}
org_id = {q(creds.abridge_org_id)}
api_allow_private = true

[sources.healthie]
# vendor = "healthie"   (and your secrets: keep them)
api_url = {q(urls.healthie)}
api_key = {q(creds.healthie_api_key)}
api_allow_private = true

[sources.openevidence]
# vendor = "openevidence"   (and your secrets: keep them; used by `carehook register`)
api_url = {q(urls.openevidence)}
api_token = {q(creds.openevidence_token)}
api_allow_private = true
"""
