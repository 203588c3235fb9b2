"""Who holds a lease: ``"<host>:<pid>:<random>"``, and which pids on this host are alive.

A worker killed with ``kill -9`` leaves its leases behind. The next worker to start on the same
host expires them at once (``Store.release_dead_owners``) instead of waiting out the lease:
an owner whose pid is not among the host's live processes cannot be working any more.

``host`` is the hostname plus, where Linux says so, the pid namespace: two containers that share
a hostname (and a database) each have their own pid numbers, so one must never judge the other's
owners by its own process table.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

_PROC = Path("/proc")


def host_identity() -> str:
    """This machine's name (``:`` removed) and, on Linux, its pid namespace's inode."""
    name = socket.gethostname().replace(":", "-") or "localhost"
    try:
        link = os.readlink(_PROC / "self" / "ns" / "pid")  # "pid:[4026531836]"
    except OSError:
        return name
    inode = link.partition("[")[2].rstrip("]")
    return f"{name}~{inode}" if inode.isdigit() else name


def new_owner(host: str) -> str:
    """A fresh lease owner id for this process: ``<host>:<pid>:<random>``."""
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"


def alive_pids() -> list[int] | None:
    """Every live pid in this pid namespace, or None where that cannot be listed.

    None means "do not judge": without the full process table a live worker could be taken for
    dead, so its leases are left to expire on their own.
    """
    try:
        pids = [int(entry.name) for entry in _PROC.iterdir() if entry.name.isdigit()]
    except OSError:
        return None
    return pids if os.getpid() in pids else None
