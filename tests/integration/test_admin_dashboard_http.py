"""The dashboard's login, session and CSRF rules over plain HTTP (no browser needed)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from .admin_support import CANARIES, TOKENS, admin_env, seed


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
