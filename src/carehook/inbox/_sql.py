"""The inbox's SQL, written once for SQLite and PostgreSQL.

``?`` placeholders (the PostgreSQL side rewrites them); ``{active}``, ``{due}``, ``{running}``
name the partial index a subquery must use on SQLite (``INDEXED BY``; ``{by_id}``: only the
rowid, ``NOT INDEXED``, or with 16 ids and an OR it scans the status index; nothing on PostgreSQL,
whose planner has statistics) and ``{greatest}`` the two-argument maximum. :class:`Statements`
fills them in once per store. Every value is a bound parameter; only these constant fragments
and placeholder counts are ever joined into SQL.
"""

# ruff: noqa: S608 (constant fragments only, see above)

from __future__ import annotations

from typing import Final

from carehook.inbox import _common as c

ACTIVE: Final = "status IN ('pending', 'processing', 'retrying')"
FINISHED: Final = "status IN ('done', 'dead', 'unhandled')"
#: the caller holds the event: processing, its lease, unexpired (params: owner, now)
FENCE: Final = "status = 'processing' AND lease_owner = ? AND lease_expires_at > ?"
#: ``e`` is its subject's head and no other event of its subject runs under a live lease
#: (params: now)
_HEAD: Final = """NOT EXISTS (SELECT 1 FROM events AS b {active} WHERE b.subject = e.subject
                   AND b.id < e.id AND b.status IN ('pending', 'processing', 'retrying'))
  AND NOT EXISTS (SELECT 1 FROM events AS r {running} WHERE r.subject = e.subject
                  AND r.status = 'processing' AND r.id <> e.id AND r.lease_expires_at > ?)"""

_TEMPLATES: Final = {
    # the earliest due waiting events that are heads (params: now, now, limit): the scan walks
    # ix_events_due in due order and stops after ``limit`` heads, whatever the backlog (only
    # that index has this order, so PostgreSQL's plan does not hang on its statistics)
    "pick_due": f"""SELECT e.id, e.subject FROM events AS e {{due}}
WHERE e.status IN ('pending', 'retrying') AND e.next_attempt_at <= ? AND {_HEAD}
ORDER BY e.next_attempt_at, e.id LIMIT ?""",
    # heads whose worker died with the lease (params: now, now, limit)
    "pick_expired": f"""SELECT e.id, e.subject FROM events AS e {{running}}
WHERE e.status = 'processing' AND e.lease_expires_at <= ? AND {_HEAD}
ORDER BY e.id LIMIT ?""",
    # re-checks the rule (a fresh snapshot on PostgreSQL) (params: owner, expires, now, now,
    # now, ids...)
    "claim": f"""UPDATE events AS e {{by_id}} SET status = 'processing', lease_owner = ?,
       lease_expires_at = ?, attempts = e.attempts + 1
WHERE ((e.status IN ('pending', 'retrying') AND e.next_attempt_at <= ?)
       OR (e.status = 'processing' AND e.lease_expires_at <= ?)) AND {_HEAD}
  AND e.id IN ({{ids}})
RETURNING id, source, vendor, event_id, type, subject, attempts, received_at, payload,
          occurred_at""",
    # a later event of the subject waits for this one (params: subject, pk)
    "waiting_behind": """SELECT 1 FROM events AS b {active} WHERE b.subject = ? AND b.id > ?
  AND b.status IN ('pending', 'processing', 'retrying') AND b.status <> 'processing' LIMIT 1""",
    # heads' due times; a head held back by a later event running is due when that lease ends
    "next_due": """SELECT min({greatest}(CASE WHEN e.status = 'processing' THEN e.lease_expires_at
                       ELSE e.next_attempt_at END,
              coalesce((SELECT max(r.lease_expires_at) FROM events AS r {running}
                        WHERE r.subject = e.subject AND r.status = 'processing'
                        AND r.id > e.id), e.received_at)))
FROM (SELECT min(id) AS id FROM events {active} WHERE status IN ('pending', 'processing',
      'retrying') GROUP BY subject) AS h JOIN events AS e ON e.id = h.id""",
}

CLOSE_ATTEMPT: Final = """UPDATE attempts SET finished_at = ?, outcome = ?, error_class = ?,
       error_message = ?, next_attempt_at = ?
WHERE event_pk = ? AND finished_at IS NULL"""
EXPIRE_ATTEMPTS: Final = (
    "UPDATE attempts SET finished_at = ?, outcome = 'expired' WHERE finished_at IS NULL"
    " AND event_pk IN ({ids})"
)
OPEN_ATTEMPT: Final = (
    "INSERT INTO attempts (event_pk, number, started_at, outcome) VALUES (?, ?, ?, 'running')"
)
DEAD_ATTEMPT: Final = """INSERT INTO attempts (event_pk, number, started_at, finished_at, outcome,
       error_class, error_message) VALUES (?, ?, ?, ?, 'dead', ?, ?)"""
FINISHED_STEPS: Final = "SELECT event_pk, name FROM steps WHERE event_pk IN ({ids})"
SUBJECTS_DATA: Final = "SELECT subject, data FROM subjects WHERE subject IN ({ids})"
COMPLETE: Final = f"""UPDATE events SET status = 'done', next_attempt_at = NULL, lease_owner = NULL,
       lease_expires_at = NULL WHERE id = ? AND {FENCE} RETURNING subject, type, source"""
FAIL: Final = f"""UPDATE events SET status = ?, next_attempt_at = ?, last_error = ?,
       lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND {FENCE}
RETURNING subject, type, source"""
#: give back unfinished (release: due now; defer: due at a time), the attempt not counted
GIVE_BACK: Final = f"""UPDATE events SET status = CASE WHEN attempts > 1 THEN 'retrying'
       ELSE 'pending' END, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
       next_attempt_at = ?, lease_owner = NULL, lease_expires_at = NULL
WHERE id = ? AND {FENCE} RETURNING subject, type, source"""
DEAD_LETTER: Final = """UPDATE events SET status = 'dead', next_attempt_at = NULL, last_error = ?,
       lease_owner = NULL, lease_expires_at = NULL WHERE id = ?"""
HELD: Final = f"SELECT subject, type, source FROM events WHERE id = ? AND {FENCE}"
INSERT_STEP: Final = """INSERT INTO steps (event_pk, name, outcome, result, finished_at)
VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_pk, name) DO NOTHING"""
INSERT_TIMELINE: Final = (
    "INSERT INTO timeline (subject, event_pk, type, state, detail, at) VALUES (?, ?, ?, ?, ?, ?)"
)
UPSERT_STATE: Final = """INSERT INTO subjects (subject, state, updated_at) VALUES (?, ?, ?)
ON CONFLICT (subject) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at"""
UPSERT_DATA: Final = """INSERT INTO subjects (subject, state, updated_at, data) VALUES (?, '', ?, ?)
ON CONFLICT (subject) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"""
INSERT_REVIEW: Final = """INSERT INTO reviews (source, subject, event_pk, kind, severity, summary,
       dedup_key, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?)"""
REVIEW_BY_ID: Final = f"SELECT {c.REVIEW_COLUMNS} FROM reviews WHERE id = ?"
RESOLVE_REVIEW: Final = """UPDATE reviews SET status = 'resolved', resolved_at = ?, resolved_by = ?,
       note = ? WHERE id = ? AND status = 'open'"""
INSERT_AUDIT: Final = (
    "INSERT INTO audit (at, actor, action, event_pk, detail) VALUES (?, ?, ?, ?, ?)"
)
LIVE_LEASES: Final = (
    "SELECT id, lease_owner FROM events WHERE status = 'processing' AND lease_expires_at > ?"
)
EXPIRE_LEASES: Final = (
    "UPDATE events SET lease_expires_at = ? WHERE status = 'processing' AND id IN ({ids})"
)
EXTEND_LEASES: Final = f"UPDATE events SET lease_expires_at = ? WHERE id IN ({{ids}}) AND {FENCE}"
END_SESSION: Final = """INSERT INTO admin_sessions_ended (session, expires_at) VALUES (?, ?)
ON CONFLICT (session) DO NOTHING"""
SESSION_ENDED: Final = "SELECT 1 FROM admin_sessions_ended WHERE session = ?"
PROBE: Final = """INSERT INTO probe (id, at) VALUES (1, ?)
ON CONFLICT (id) DO UPDATE SET at = excluded.at"""
SELECT_EVENT: Final = f"SELECT {c.EVENT_COLUMNS} FROM events WHERE id = ?"
SELECT_PAYLOAD: Final = "SELECT source, event_id, payload FROM events WHERE id = ?"
SELECT_AUDIT: Final = f"SELECT {c.AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT ?"
STEPS_OF: Final = f"SELECT {c.STEP_COLUMNS} FROM steps WHERE event_pk = ? ORDER BY id"
ATTEMPTS_OF: Final = f"SELECT {c.ATTEMPT_COLUMNS} FROM attempts WHERE event_pk = ? ORDER BY id"
LAST_ERRORS: Final = (
    f"SELECT event_pk, {c.ATTEMPT_COLUMNS} FROM attempts WHERE event_pk IN ({{ids}})"
    " AND error_class IS NOT NULL ORDER BY id"
)
TIMELINE: Final = (
    f"SELECT * FROM (SELECT {c.TIMELINE_COLUMNS} FROM timeline WHERE subject = ?"
    " ORDER BY id DESC LIMIT ?) AS t ORDER BY id"
)


def ids(sql: str, n: int) -> str:
    """``sql`` with its ``{ids}`` list of ``n`` placeholders."""
    return sql.replace("{ids}", ", ".join("?" * n))


class Statements:
    """The templates above, filled in for one dialect."""

    def __init__(self, hints: dict[str, str], greatest: str) -> None:
        q: dict[str, str] = {
            name: t.replace("{active}", hints["active"]).replace("{due}", hints["due"])
            .replace("{running}", hints["running"]).replace("{by_id}", hints["by_id"])
            .replace("{greatest}", greatest)
            for name, t in _TEMPLATES.items()
        }  # fmt: skip
        self.pick_due = q["pick_due"]
        self.pick_expired = q["pick_expired"]
        self.claim = q["claim"]
        self.waiting_behind = q["waiting_behind"]
        self.next_due = q["next_due"]
