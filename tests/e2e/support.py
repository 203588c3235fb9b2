"""What the e2e tests share: the installed `carehook` command, a clean environment, free ports."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

CAREHOOK = str(Path(sys.executable).parent / "carehook")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This process's environment without CAREHOOK_* settings, with wide tables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREHOOK_")}
    env["COLUMNS"] = "200"
    return env
