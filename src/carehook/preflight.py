"""Start-up checks of the composition root: refuse to start on what would fail every event.

``carehook serve`` and ``carehook worker`` call :func:`preflight` before they serve or claim
anything. It resolves every secret, destination and channel once (a missing ``env:`` variable, an
invalid Apprise URL, a Standard Webhooks secret that is not base64) and raises
:class:`~carehook.errors.ConfigError` naming the setting, never its value; a configuration that
works but is probably a mistake (a ``type = "fhir"`` destination no workflow uses) is logged as
a warning. The connectors it built are the ones the worker then uses: nothing is resolved twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from carehook.errors import ConfigError, VerificationError
from carehook.observability import get_logger
from carehook.services import ServiceSet, build_services
from carehook.settings import Settings, resolve_secret
from carehook.signatures import rfc9421, standard_webhooks

_log = get_logger("carehook.preflight")

#: the FHIR destination the workflows write notes to (the only ``type = "fhir"`` one they use)
EHR_DESTINATION = "ehr"

#: how each vendor's scheme turns a configured secret into its key (raising when it cannot)
_KEY_DECODERS: Mapping[str, Callable[[str], bytes]] = {
    "standard-webhooks": standard_webhooks.secret_key,
    "healthie": rfc9421.secret_key,
}


def check_source_secrets(settings: Settings) -> None:
    """Every source secret resolves and, for schemes with encoded keys, decodes."""
    for name, cfg in settings.sources.items():
        decode = _KEY_DECODERS.get(cfg.vendor)
        for index, raw in enumerate(cfg.secrets):
            where = f"sources.{name}.secrets[{index}]"
            secret = resolve_secret(raw, where)
            if decode is None:
                continue
            try:
                decode(secret)
            except VerificationError:
                raise ConfigError(
                    f"{where}: not a valid {cfg.vendor} secret ({_KEY_FORMAT[cfg.vendor]})"
                ) from None


_KEY_FORMAT = {
    "standard-webhooks": "base64 after an optional whsec_ prefix",
    "healthie": "a base64: secret must be valid base64",
}


def unused_destinations(settings: Settings) -> list[str]:
    """The ``type = "fhir"`` destinations no workflow writes to (only ``ehr`` is used)."""
    return sorted(
        name
        for name, dest in settings.destinations.items()
        if dest.type == "fhir" and name != EHR_DESTINATION
    )


def preflight(settings: Settings, *, services: bool = True) -> ServiceSet | None:
    """Check the configuration the process runs on; build the workflows' connectors when
    ``services`` (the process runs a worker). Raises ConfigError on the first problem."""
    check_source_secrets(settings)
    for name in unused_destinations(settings):
        reason = f"type fhir, but workflows only write to '{EHR_DESTINATION}'"
        _log.warning("config.unused_destination", setting=f"destinations.{name}", reason=reason)
    return build_services(settings) if services else None
