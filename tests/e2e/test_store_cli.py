"""The CLI and the one store: ``memory://`` is refused by ``serve`` with a clear message."""

from __future__ import annotations

from pathlib import Path

from .test_worker_cli import cli
from .test_worker_e2e import write_config


def test_serve_refuses_a_memory_store_saying_why(tmp_path: Path) -> None:
    """``serve`` with ``memory://`` exits 2 naming the reason, before it listens anywhere."""
    config = write_config(tmp_path, "memory://")
    result = cli(config, "serve", "--port", "8137", code=2)
    assert "memory:// is not supported" in result.stderr
    assert "must commit them to disk" in result.stderr
    assert "Traceback" not in result.stderr
