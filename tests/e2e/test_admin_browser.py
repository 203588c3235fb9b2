"""The dashboard in a real browser: log in, replay a dead event once its cause is fixed, bulk
replay with a dry-run count, resolve a review, and a read-only token sees no replay button and
is refused (403) if it posts anyway. Every page is screenshotted; no page shows a canary
without the payload scope."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from integration.admin_support import (
    CANARIES,
    TOKENS,
    AdminEnv,
    Seeded,
    admin_env,
    seed,
    wait_for,
)
from integration.test_ingress import sample, signed

from .browser import chromium


class Shots:
    """Screenshots of each page, numbered, under the test's output directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def take(self, page: Any, name: str) -> None:
        """Save a full-page PNG of ``page``."""
        self.n += 1
        page.screenshot(path=str(self.folder / f"{self.n:02d}-{name}.png"), full_page=True)


def _login(page: Any, base: str, token_name: str) -> None:
    page.goto(f"{base}/admin/")
    assert page.url.endswith("/admin/login")
    page.fill("input[name=token]", TOKENS[token_name][0])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def _until_status(page: Any, status: str) -> None:
    def check() -> bool:
        page.reload()
        return bool(page.inner_text("#event-status") == status)

    wait_for(check)


def _replay_dead_event(page: Any, env: AdminEnv, seeded: Seeded, shots: Shots) -> None:
    base = env.gw.url
    shots.take(page, "overview")
    assert page.inner_text("#dead-letters") == "1"
    page.click("text=Dead letters")
    shots.take(page, "dead-letters")
    page.click(f"a[href='/admin/events/{seeded.dead_pk}']")
    assert page.inner_text("#event-status") == "dead"
    assert "PermanentError" in page.content()
    shots.take(page, "event-dead")
    env.receiver.status = 200  # the cause: the portal refused the forward; now it accepts
    page.click("#replay")
    page.wait_for_url(re.compile(rf"{base}/admin/events/{seeded.dead_pk}\?flash=replayed"))
    _until_status(page, "done")
    assert page.locator("#replay").count() == 1  # the replay scope sees the button
    shots.take(page, "event-done")


def _bulk_replay(page: Any, env: AdminEnv, shots: Shots) -> None:
    gw = env.gw
    env.receiver.status = 400
    session = sample("abridge", "encounter.session.completed", seq=9)
    assert gw.post("abridge", *signed(gw, "abridge", session)).status_code == 200
    wait_for(lambda: env.get("/dead-letters").json()["items"])
    page.goto(f"{gw.url}/admin/dead-letters")
    page.click("#bulk-replay")
    assert page.inner_text("h1").startswith("Replay 1 dead event")  # the dry-run count
    shots.take(page, "bulk-replay-confirm")
    assert env.get("/dead-letters").json()["items"]  # nothing replayed by the dry run
    env.receiver.status = 200
    page.click("#confirm-replay")
    assert page.inner_text("h1") == "Replayed 1 event"
    wait_for(lambda: not env.get("/dead-letters").json()["items"])


def _resolve_review(page: Any, env: AdminEnv, seeded: Seeded, shots: Shots) -> None:
    page.click("text=Reviews")
    row = page.locator(f"#review-{seeded.review_id}")
    shots.take(page, "reviews")
    row.locator("input[name=note]").fill("score checked with the clinician")
    row.locator("button").click()
    page.wait_for_url(re.compile(r".*/admin/reviews\?flash=resolved"))
    assert page.locator(f"#review-{seeded.review_id}").count() == 0
    item = env.get("/reviews", status="all").json()["items"][0]
    assert item["resolved_by"] == "root"


def _payload_and_other_pages(page: Any, env: AdminEnv, seeded: Seeded, shots: Shots) -> None:
    base = env.gw.url
    page.goto(f"{base}/admin/events/{seeded.canary_pk}")
    page.click("#show-payload")
    assert "This view is audited" in page.inner_text(".audited")
    assert CANARIES[0] in page.inner_text("pre.payload")
    shots.take(page, "event-payload-audited")
    audit = env.get("/audit", "auditor").json()["items"]
    assert any(a["actor"] == "root" and a["action"] == "payload.view" for a in audit)
    page.goto(f"{base}/admin/events/{seeded.dead_pk}")
    page.click("td a[href^='/admin/timeline']")
    assert "subject.record" in page.content() or "encounter.session.completed" in page.content()
    shots.take(page, "timeline")
    page.click("text=Sources")
    assert "#0" in page.inner_text("table.sources")
    shots.take(page, "sources")
    page.click("text=Events")
    shots.take(page, "events")


def _read_only(browser: Any, env: AdminEnv, seeded: Seeded, shots: Shots) -> None:
    base = env.gw.url
    context = browser.new_context()
    page = context.new_page()
    _login(page, base, "reader")
    cookie = next(c for c in context.cookies() if c["name"] == "carehook_admin")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert not cookie["secure"]  # plain HTTP here; Secure is set when served over HTTPS
    texts = []
    for path in ("/", "/events", f"/events/{seeded.canary_pk}",
                 f"/events/{seeded.canary_pk}?payload=1", f"/events/{seeded.dead_pk}",
                 "/dead-letters", "/reviews?status=all", "/sources",
                 "/timeline?subject=" + env.get("/events", source="healthie").json()["items"][0]
                 ["subject"]):  # fmt: skip
        page.goto(f"{base}/admin{path}")
        texts.append(page.content())
    assert page.locator("#replay").count() == 0
    page.goto(f"{base}/admin/events/{seeded.dead_pk}")
    assert page.locator("#replay").count() == 0
    assert page.locator("#show-payload").count() == 0
    shots.take(page, "read-only-event")
    csrf = page.locator("form.logout input[name=csrf]").input_value()
    refused = page.request.post(f"{base}/admin/events/{seeded.dead_pk}/replay",
                                form={"csrf": csrf})  # fmt: skip
    assert refused.status == 403
    assert page.request.post(f"{base}/admin/reviews/{seeded.review_id}/resolve",
                             form={"csrf": csrf, "note": "x"}).status == 403  # fmt: skip
    for text in texts:
        for canary in CANARIES:
            assert canary not in text
    session = [c for c in context.cookies() if c["name"] == "carehook_admin"]
    assert session
    page.click("form.logout button")
    page.wait_for_url(f"{base}/admin/login")
    page.goto(f"{base}/admin/events")
    assert page.url.endswith("/admin/login")
    context.add_cookies(session)  # a copy kept from before the logout: ended too
    page.goto(f"{base}/admin/events")
    assert page.url.endswith("/admin/login")
    context.close()


def test_dashboard_end_to_end(tmp_path: Path) -> None:
    """Log in, replay a fixed dead event to done, bulk replay, resolve, read-only refused."""
    shots = Shots(tmp_path / "screenshots")
    with admin_env(tmp_path, None) as env, chromium() as browser:
        seeded = seed(env)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(f"{env.gw.url}/admin/login")
        shots.take(page, "login")
        _login(page, env.gw.url, "root")
        _replay_dead_event(page, env, seeded, shots)
        _bulk_replay(page, env, shots)
        _resolve_review(page, env, seeded, shots)
        _payload_and_other_pages(page, env, seeded, shots)
        no_csrf = page.request.post(f"{env.gw.url}/admin/events/{seeded.dead_pk}/replay",
                                    form={"csrf": "forged"})  # fmt: skip
        assert no_csrf.status == 403
        context.close()
        _read_only(browser, env, seeded, shots)
    assert len(list((tmp_path / "screenshots").glob("*.png"))) >= 10
