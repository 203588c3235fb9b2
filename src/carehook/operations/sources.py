"""Each configured source's status: its secrets' last matches and its recent traffic."""

from __future__ import annotations

from collections.abc import Sequence

from carehook.inbox.reads import RequestCount, SecretUse
from carehook.operations.models import SecretStatus, SourceConfig, SourceStatus


def source_statuses(
    sources: Sequence[SourceConfig], usage: Sequence[SecretUse], counts: Sequence[RequestCount]
) -> list[SourceStatus]:
    """Configured sources first (in config order), then sources seen only in the store;
    ``counts`` are rejections (:meth:`carehook.inbox.reads.AdminReads.rejection_counts`)."""
    names = [s.name for s in sources]
    names += sorted({u.source for u in usage} - set(names))
    known = {s.name: s for s in sources}
    return [_status(name, known.get(name), [u for u in usage if u.source == name],
                    [c for c in counts if c.source == name]) for name in names]  # fmt: skip


def _status(
    name: str, cfg: SourceConfig | None, usage: list[SecretUse], counts: list[RequestCount]
) -> SourceStatus:
    configured = set(cfg.secret_ids) if cfg is not None else set()
    by_index = {u.secret_index: u for u in usage}
    secrets = [
        SecretStatus(i, i in configured, by_index[i].events if i in by_index else 0,
                     by_index[i].last_matched_at if i in by_index else None)
        for i in sorted(configured | set(by_index))
    ]  # fmt: skip
    last = max(usage, key=lambda u: u.last_matched_at, default=None)
    by_cause: dict[str, int] = {}
    for c in counts:
        by_cause[c.cause or c.outcome] = by_cause.get(c.cause or c.outcome, 0) + c.count
    return SourceStatus(
        name=name, vendor=cfg.vendor if cfg else "", endpoint=cfg.endpoint if cfg else "",
        configured=cfg is not None, secrets=secrets,
        last_matched_index=None if last is None else last.secret_index,
        last_matched_at=None if last is None else last.last_matched_at,
        # the newest stored event (a duplicate is not counted: it stored nothing new)
        last_accepted_at=None if last is None else last.last_matched_at,
        last_rejected_at=max((c.last_at for c in counts), default=None),
        rejections_24h=by_cause,
    )  # fmt: skip
