"""The gateway and the CLI as a new user runs them: real processes, real HTTP, real SQLite."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from carehook.envelope import SignedRequest
from carehook.settings import load_settings
from carehook.sources import build_source
from carehook.vendors import builtin_vendors

from .support import CAREHOOK, clean_env, free_port

pytestmark = pytest.mark.slow



@dataclass
class Served:
    """A `carehook serve` process started in a fresh folder with no config."""

    cwd: Path
    port: int
    proc: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the carehook command in the same folder."""
        result = subprocess.run([CAREHOOK, *args], cwd=self.cwd, capture_output=True, text=True,
                                timeout=120, env=clean_env())
        if check and result.returncode != 0:
            raise AssertionError(f"carehook {args} failed: {result.stdout}\n{result.stderr}")
        return result



@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`carehook serve` as `make run` starts it, in an empty folder."""
    port = free_port()
    proc = subprocess.Popen([CAREHOOK, "serve", "--port", str(port)], cwd=tmp_path, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"serve did not start: {proc.communicate()}")
        time.sleep(0.1)
    yield Served(tmp_path, port, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_first_run_writes_a_config_and_says_how_to_simulate(served: Served) -> None:
    """With no config, serve writes .carehook/carehook.toml (0600) and prints a simulate command."""
    config = served.cwd / ".carehook" / "carehook.toml"
    assert config.exists()
    assert config.stat().st_mode & 0o777 == 0o600
    assert set(load_settings(config).sources) == {
        "abridge", "openevidence", "nabla", "healthie", "standard-webhooks"}
    assert (served.cwd / ".carehook" / "data-keys").stat().st_mode & 0o777 == 0o600
    served.proc.send_signal(signal.SIGTERM)
    _, err = served.proc.communicate(timeout=30)
    assert "carehook simulate abridge encounter.session.completed" in err


def test_simulate_then_list_show_and_audit(served: Served) -> None:
    """simulate → events ls (done) → show --payload (audited) → requests ls, as the README says."""
    url = f"{served.url}/webhooks/abridge"
    sim = served.cli("simulate", "abridge", "encounter.session.completed", "--url", url,
                     "--count", "2", "--duplicate")
    assert sim.stdout.count("-> 200") == 4
    assert sim.stdout.count("duplicate") == 2
    events = json.loads(served.cli("events", "ls", "--json").stdout)
    assert len(events) == 2
    assert {"id", "source", "vendor", "event_id", "type", "subject", "status", "attempts",
            "received_at"} <= set(events[0])
    deadline = time.monotonic() + 30  # serve's in-process worker runs each event's workflow
    while {e["status"] for e in events} != {"done"} and time.monotonic() < deadline:
        time.sleep(0.2)
        events = json.loads(served.cli("events", "ls", "--json").stdout)
    assert {e["status"] for e in events} == {"done"}
    shown = json.loads(served.cli("events", "show", str(events[0]["id"]), "--json").stdout)
    assert "payload" not in shown
    with_payload = json.loads(served.cli("events", "show", str(events[0]["id"]), "--json",
                                         "--payload", "--actor", "alice").stdout)
    assert json.loads(with_payload["payload"])["event_id"] == events[0]["event_id"]
    reqs = json.loads(served.cli("requests", "ls", "--json").stdout)
    assert sorted(r["outcome"] for r in reqs) == ["accepted", "accepted", "duplicate", "duplicate"]
    db = b"".join(p.read_bytes() for p in (served.cwd / ".carehook").glob("carehook.db*"))
    assert events[0]["event_id"].encode() in db  # metadata is plain ...
    assert with_payload["payload"].encode() not in db  # ... the payload is not


def test_simulate_every_vendor_and_list(served: Served) -> None:
    """simulate --list shows every catalog; one event of each vendor is accepted."""
    listing = served.cli("simulate", "--list").stdout
    vendors = builtin_vendors()
    for name, vendor in vendors.items():
        assert name in listing
        for event_type in vendor.event_types:
            assert event_type in listing
    for name, vendor in vendors.items():
        event_type = vendor.event_types[0] if vendor.event_types else "message.created"
        out = served.cli("simulate", name, event_type, "--url", f"{served.url}/webhooks/{name}")
        assert "-> 200" in out.stdout, (name, out.stdout)


def test_verify_explains_pass_and_failures(served: Served, tmp_path: Path) -> None:
    """verify says which secret matches, a bad signature, and a stale timestamp's skew."""
    config = served.cwd / ".carehook" / "carehook.toml"
    settings = load_settings(config)
    src = build_source("abridge", settings.sources["abridge"], builtin_vendors())
    body = json.dumps(builtin_vendors()["abridge"].sample("provider.enrolled",
                                                           _now_dt(), 7)).encode()

    def capture(at: float, raw: bytes) -> tuple[Path, Path]:
        headers = {"content-type": "application/json"}
        headers.update(src.scheme.sign(SignedRequest("POST", src.public_path, "", headers, raw),
                                       src.secrets[0], at))
        h, b = tmp_path / f"h{at}", tmp_path / f"b{at}"
        h.write_text("POST /webhooks/abridge HTTP/1.1\n" +
                     "".join(f"{k}: {v}\n" for k, v in headers.items()))
        b.write_bytes(raw)
        return h, b

    h, b = capture(time.time(), body)
    ok = served.cli("verify", "--source", "abridge", "--headers", str(h), "--body", str(b))
    assert "secret #0: signature matches" in ok.stdout
    b.write_bytes(body.replace(b"{", b"{ ", 1))
    bad = served.cli("verify", "--source", "abridge", "--headers", str(h), "--body", str(b),
                     check=False)
    assert bad.returncode == 1
    assert "bad_signature" in bad.stdout
    h2, b2 = capture(time.time() - 3600, body)
    stale = served.cli("verify", "--source", "abridge", "--headers", str(h2), "--body", str(b2),
                       check=False)
    assert stale.returncode == 1
    assert "timestamp_skew" in stale.stdout
    assert "matches: the signature is right" in stale.stdout
    for output in (ok, bad, stale):
        assert src.secrets[0] not in output.stdout + output.stderr
        assert body.decode() not in output.stdout + output.stderr


def _now_dt():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    """A config error prints one line naming the field (never the value) and exits 2."""
    config = tmp_path / "c.toml"
    config.write_text('[sources.x]\nvendor = "acme"\nsecrets = ["TOPSECRET"]\n')
    result = subprocess.run([CAREHOOK, "events", "ls", "--config", str(config)],
                            capture_output=True, text=True, env=clean_env(), timeout=60)
    assert result.returncode == 2
    assert "sources.x.vendor" in result.stderr
    assert "TOPSECRET" not in result.stderr
