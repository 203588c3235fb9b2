"""The dashboard's login, session and CSRF rules over plain HTTP (no browser needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from structlog.testing import capture_logs

from carehook.web.admin.auth import Sessions

from .admin_support import CANARIES, TOKENS, admin_env, seed
from .conftest import start_gateway


def _login(client: httpx.Client, token: str) -> httpx.Response:
    form = client.get("/admin/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    return client.post("/admin/login", data={"csrf": csrf.group(1), "token": token})


def test_login_needs_its_csrf_token_and_a_known_token(tmp_path: Path) -> None:
    """A login without the login form's CSRF token is 403, an unknown token 401; a good one
    sets an HttpOnly SameSite=Strict cookie; pages need it and a forged cookie is refused."""
    with admin_env(tmp_path, None) as env:
        seeded = seed(env)
        with httpx.Client(base_url=env.gw.url, timeout=10) as client:
            assert client.get("/admin/events").status_code == 303
            bare = client.post("/admin/login", data={"token": TOKENS["root"][0]})
            assert bare.status_code == 403
            wrong = _login(client, "chk_wrong")
            assert wrong.status_code == 401
            assert "chk_wrong" not in wrong.text
            good = _login(client, TOKENS["reader"][0])
            assert good.status_code == 303
            cookie = good.headers["set-cookie"]
            assert "HttpOnly" in cookie
            assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
            page = client.get(f"/admin/events/{seeded.canary_pk}?payload=1")
            assert page.status_code == 200
            for canary in CANARIES:
                assert canary not in page.text
            assert client.get("/admin/sources").status_code == 403
            assert client.post(f"/admin/events/{seeded.dead_pk}/replay").status_code == 403
        with httpx.Client(base_url=env.gw.url, timeout=10) as forged:
            forged.cookies.set("carehook_admin", "e30.0000", path="/admin")
            assert forged.get("/admin/events").status_code == 303
            assert forged.post(f"/admin/events/{seeded.dead_pk}/replay",
                               data={"csrf": "x"}).status_code == 401  # fmt: skip


def _csrf_of(page: httpx.Response) -> str:
    found = re.search(r'form class="logout".*?name="csrf" value="([^"]+)"', page.text, re.S)
    assert found, "the page has no logout form"
    return found.group(1)


def test_logout_ends_the_session_for_every_copy_of_its_cookie(
    tmp_path: Path, storage_url: str
) -> None:
    """A copy of the session cookie taken before logout (before its renewal by a page view) is
    refused after it (pages redirect to the login, forms are 401), in a second gateway on the
    same database too; a logout without
    the session's CSRF token ends nothing; the next login is a new session that works."""
    with admin_env(tmp_path, storage_url) as env:
        seed(env)
        with httpx.Client(base_url=env.gw.url, timeout=10) as client:
            assert _login(client, TOKENS["root"][0]).status_code == 303
            stolen = client.cookies["carehook_admin"]
            page = client.get("/admin/events")
            csrf = _csrf_of(page)
            renewed = page.cookies["carehook_admin"]  # each page view renews the idle clock
            assert Sessions.session_of(renewed.strip('"')) == Sessions.session_of(
                stolen.strip('"'))  # fmt: skip
            assert client.post("/admin/logout", data={"csrf": "forged"}).status_code == 403
            assert client.get("/admin/events").status_code == 200  # still signed in
            out = client.post("/admin/logout", data={"csrf": csrf})
            assert out.status_code == 303
            assert out.headers["location"].endswith("/admin/login")
            assert "carehook_admin" not in client.cookies
        with httpx.Client(base_url=env.gw.url, timeout=10) as thief:
            thief.cookies.set("carehook_admin", stolen, path="/admin")
            page = thief.get("/admin/events")
            assert page.status_code == 303
            assert page.headers["location"].endswith("/admin/login")
            assert thief.post("/admin/dead-letters/replay",
                              data={"csrf": csrf}).status_code == 401  # fmt: skip
            assert thief.post("/admin/logout", data={"csrf": csrf}).status_code == 303
        again = start_gateway(tmp_path / "carehook.toml")  # a second process's view
        second = next(again)
        try:
            with httpx.Client(base_url=second.url, timeout=10) as thief:
                thief.cookies.set("carehook_admin", stolen, path="/admin")
                assert thief.get("/admin/events").status_code == 303
        finally:
            again.close()
        with httpx.Client(base_url=env.gw.url, timeout=10) as client:
            assert _login(client, TOKENS["root"][0]).status_code == 303
            assert client.cookies["carehook_admin"] != stolen
            assert client.get("/admin/events").status_code == 200
            bearer = {"authorization": f"Bearer {TOKENS['root'][0]}"}
            trail = client.get("/admin/api/audit", headers=bearer)
        assert trail.status_code == 200
        sessions = [(a["actor"], a["action"], a["detail"]) for a in reversed(trail.json()["items"])
                    if a["action"].startswith("session.")]  # fmt: skip
        # the client keeps the cookie as sent, quoted (it holds "="); the server reads it unquoted
        first = f"dashboard session {Sessions.session_of(stolen.strip(chr(34)))[:12]}"
        assert sessions[:2] == [("root", "session.start", first), ("root", "session.end", first)]
        assert [a for _, a, _ in sessions] == ["session.start", "session.end", "session.start"]
        assert stolen not in trail.text


def test_a_cookie_of_odd_bytes_is_refused_not_an_error(tmp_path: Path) -> None:
    """Bytes outside ASCII in the session cookie (which ``hmac.compare_digest`` cannot compare
    as text) get the login redirect, not a 500."""
    with admin_env(tmp_path, None) as env:
        for value in (b"e30.\xe9\xe9", b"\xff\xfe.abc", b"e30.00\xc3\xa9"):
            headers = [(b"cookie", b"carehook_admin=" + value)]
            page = httpx.get(f"{env.gw.url}/admin/events", headers=headers, timeout=10)
            assert page.status_code == 303, value


def _refusals(metrics: str) -> dict[tuple[str, str], float]:
    """``carehook_admin_auth_refused_total``'s samples by (surface, reason)."""
    counts: dict[tuple[str, str], float] = {}
    for line in metrics.splitlines():
        if line.startswith("carehook_admin_auth_refused_total{"):
            labels, value = line.rsplit(" ", 1)
            named = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            counts[named["surface"], named["reason"]] = float(value)
    return counts


def test_a_refused_token_is_logged_and_counted_without_its_value(tmp_path: Path) -> None:
    """A wrong token at the dashboard's sign-in or the API's bearer check leaves a warning with
    the reason and the address, never the presented value (one character from a real token),
    and counts in ``carehook_admin_auth_refused_total`` by surface and reason (an alert on a
    brute-force attempt); an accepted token counts nothing."""
    wrong = TOKENS["root"][0][:-1] + "x"
    with (admin_env(tmp_path, None) as env, capture_logs() as logs,
          httpx.Client(base_url=env.gw.url, timeout=10) as client):  # fmt: skip
        assert _refusals(client.get("/metrics").text) == {}
        assert _login(client, wrong).status_code == 401
        assert client.get("/admin/api/events",
                          headers={"authorization": f"Bearer {wrong}"}).status_code == 401
        assert client.get("/admin/api/events").status_code == 401
        assert client.get("/admin/api/events").status_code == 401
        assert client.get("/admin/api/events", headers={
            "authorization": f"Bearer {TOKENS['root'][0]}"}).status_code == 200  # fmt: skip
        assert _login(client, TOKENS["root"][0]).status_code == 303
        metrics = client.get("/metrics").text
    assert _refusals(metrics) == {("dashboard", "unknown"): 1.0, ("api", "unknown"): 1.0,
                                  ("api", "missing"): 2.0}  # fmt: skip
    assert wrong not in metrics
    refused = [(e["event"], e.get("reason")) for e in logs if e["event"].endswith("_refused")]
    assert refused == [("admin.sign_in_refused", "unknown"), ("admin.token_refused", "unknown"),
                       ("admin.token_refused", "missing"), ("admin.token_refused", "missing")]
    assert all(e.get("remote_addr") == "127.0.0.1" for e in logs if e["event"].endswith("_refused"))
    assert wrong not in json.dumps(logs, default=str)
