"""``carehook sandbox``: fake Abridge, Healthie, OpenEvidence and FHIR APIs on loopback.

The socket is bound before anything is printed, so a busy port fails with uvicorn's one-line
error instead of a snippet for a server that never started. The URLs go to stderr and the config
snippet to stdout (``carehook sandbox > sandbox.toml`` keeps just the TOML).
"""

from __future__ import annotations

import ipaddress
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from carehook.cli_common import err
from carehook.settings import config_path

PortOpt = Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free).")]
HostOpt = Annotated[str, typer.Option(help="Loopback address to listen on.")]
ApplyOpt = Annotated[bool, typer.Option(
    "--apply", help="Also write the sandbox's settings into the gateway's config file.")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="The gateway's carehook.toml (for --apply; default as for serve).")]


def sandbox(port: PortOpt = 9000, host: HostOpt = "127.0.0.1", apply: ApplyOpt = False,
            config_file: ConfigOpt = None) -> None:
    """Serve fake Abridge, Healthie, OpenEvidence and FHIR APIs on loopback.

    Prints the config to point a gateway at them (--apply writes it into the gateway's
    carehook.toml; restart the gateway to use it); runs until Ctrl-C.
    """
    import uvicorn

    from carehook.sandbox.app import build_sandbox

    if not is_loopback(host):
        err.print(f"refusing to serve the sandbox on {host}: it has fixed, public credentials; "
                  "use a loopback address (127.0.0.1, ::1 or localhost)",
                  highlight=False, markup=False)  # fmt: skip
        raise typer.Exit(2)
    host = host.strip("[]")
    box = build_sandbox()
    config = uvicorn.Config(box.app, host=host, port=port, log_level="warning", lifespan="on")
    sock = config.bind_socket()  # exits with uvicorn's message if the port is taken
    base = f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"
    _announce(base, box.config_snippet(base))
    if apply:
        _apply(config_path(config_file), box.config_snippet(base))
    uvicorn.Server(config).run(sockets=[sock])


def _apply(path: Path, snippet: str) -> None:
    """Merge the sandbox's settings into the config at ``path``, checked before writing."""
    from carehook.configfile import merge_tables
    from carehook.settings import load_settings

    try:
        merged = merge_tables(path.read_text(), snippet)
    except FileNotFoundError:
        err.print(f"{path} does not exist: run `carehook init` first", highlight=False,
                  markup=False)  # fmt: skip
        raise typer.Exit(2) from None
    # checked as a file beside it (relative paths resolve the same), private like the config
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".toml") as candidate:
        candidate.write(merged)
        candidate.flush()
        load_settings(Path(candidate.name))
    path.write_text(merged)
    err.print(f"wrote the sandbox settings into {path}; restart the gateway to use them",
              highlight=False, markup=False)  # fmt: skip


def _announce(base: str, snippet: str) -> None:
    """The URLs to stderr, the config snippet to stdout."""
    from carehook.sandbox.app import SandboxUrls

    urls = SandboxUrls.under(base)
    err.print(
        f"carehook sandbox on {base} (fake APIs, fake credentials; Ctrl-C to stop)\n"
        f"  Abridge REST      {urls.abridge}\n"
        f"  Healthie GraphQL  {urls.healthie}\n"
        f"  FHIR R4           {urls.fhir}\n"
        f"  OpenEvidence      {urls.openevidence}  (webhook registration only)\n"
        "Add this to the gateway's carehook.toml (the comments say where):",
        highlight=False, markup=False, soft_wrap=True,
    )  # fmt: skip
    print(snippet, flush=True)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
