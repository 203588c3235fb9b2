"""Admin tokens and dashboard sessions: hashes only, constant-time checks, signed expiring
cookies that end when their token is removed or re-issued."""

from __future__ import annotations

from carehook.settings import AdminToken
from carehook.web.admin.auth import Sessions, check_token, new_token, session_key, token_hash


def _token(name: str, token: str, scopes: list[str]) -> AdminToken:
    return AdminToken(name=name, hash=token_hash(token), scopes=scopes)  # type: ignore[arg-type]


def test_tokens_are_checked_by_hash_against_every_configured_one() -> None:
    """The right token finds its entry; a wrong, empty or hash-as-token value finds none."""
    a, b = new_token(), new_token()
    tokens = [_token("a", a, ["read"]), _token("b", b, ["read", "replay"])]
    found = check_token(tokens, b)
    assert found is not None
    assert found.name == "b"
    assert check_token(tokens, a + "x") is None
    assert check_token(tokens, "") is None
    assert check_token(tokens, tokens[0].hash) is None
    assert a.startswith("chk_")
    assert a not in tokens[0].hash


def test_sessions_are_signed_expire_and_end_with_their_token() -> None:
    """A valid cookie names its token; tampering, expiry, removal or re-issue end it."""
    raw = new_token()
    token = _token("oncall", raw, ["read"])
    sessions = Sessions(session_key(b"k" * 32), 60)
    cookie = sessions.issue(token, now=1000.0)
    who = sessions.check([token], cookie, now=1030.0)
    assert who is not None
    assert who.name == "oncall"
    assert who.scopes == frozenset({"read"})
    assert who.csrf
    assert sessions.check([token], cookie, now=1061.0) is None
    data, _, mac = cookie.partition(".")
    assert sessions.check([token], data[:-2] + "AA." + mac, now=1030.0) is None
    assert sessions.check([], cookie, now=1030.0) is None
    reissued = _token("oncall", new_token(), ["read", "payload"])
    assert sessions.check([reissued], cookie, now=1030.0) is None
    other = Sessions(session_key(b"j" * 32), 60)
    assert other.check([token], cookie, now=1030.0) is None


def test_scopes_come_from_the_config_not_the_cookie() -> None:
    """Narrowing a token's scopes in the config narrows its live sessions."""
    raw = new_token()
    wide = _token("oncall", raw, ["read", "replay"])
    sessions = Sessions(session_key(b"k" * 32), 60)
    cookie = sessions.issue(wide, now=0.0)
    narrow = _token("oncall", raw, ["read"])
    who = sessions.check([narrow], cookie, now=1.0)
    assert who is not None
    assert not who.can("replay")


def test_each_session_has_its_own_id_and_expiry_and_odd_cookies_are_refused() -> None:
    """Logout stores the session's id: a hash, the same for every copy of one cookie, another
    for the next login, never the cookie itself; a cookie of non-ASCII text (which
    ``hmac.compare_digest`` cannot compare) is refused, not an error."""
    token = _token("oncall", new_token(), ["read"])
    sessions = Sessions(session_key(b"k" * 32), 60)
    first, second = sessions.issue(token, now=1000.0), sessions.issue(token, now=1000.0)
    a = sessions.check([token], first, now=1001.0)
    again = sessions.check([token], first, now=1002.0)
    b = sessions.check([token], second, now=1001.0)
    assert a is not None
    assert again is not None
    assert b is not None
    assert a.session == again.session
    assert a.session != b.session
    assert len(a.session) == 32
    assert a.session not in first
    assert a.expires == 1060
    data, _, mac = first.partition(".")
    for odd in (f"{data}.{mac[:-1]}\u00e9", f"{data}\udc80.{mac}", "\x00", ".", ""):
        assert sessions.check([token], odd, now=1001.0) is None


def test_an_idle_session_ends_and_a_renewal_never_outlives_the_session() -> None:
    """Unused for the idle time, a session ends; each renewal restarts that clock with the
    same session id and CSRF token, but never past the absolute end from sign-in."""
    token = _token("oncall", new_token(), ["read"])
    sessions = Sessions(session_key(b"k" * 32), 600, idle_seconds=60)
    cookie = sessions.issue(token, now=1000.0)
    assert sessions.check([token], cookie, now=1059.0) is not None
    assert sessions.check([token], cookie, now=1061.0) is None  # idle too long
    who = sessions.check([token], cookie, now=1050.0)
    assert who is not None
    assert who.expires == 1600
    renewed = sessions.renew(who, now=1050.0)
    again = sessions.check([token], renewed, now=1100.0)
    assert again is not None
    assert (again.session, again.csrf, again.expires) == (who.session, who.csrf, 1600)
    assert Sessions.session_of(renewed) == Sessions.session_of(cookie) == who.session
    late = sessions.renew(again, now=1590.0)
    assert sessions.check([token], late, now=1599.0) is not None
    assert sessions.check([token], late, now=1601.0) is None  # the absolute end holds
    assert Sessions(session_key(b"k" * 32), 60, idle_seconds=600).idle == 60
