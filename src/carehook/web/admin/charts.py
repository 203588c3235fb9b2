"""Small inline SVG charts for the dashboard (no script, no external asset).

Numbers become coordinates; every label goes through :func:`markupsafe.escape`, so the markup
returned is safe to insert as is.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

_COLOURS = {"accepted": "#2e7d32", "duplicate": "#6a8caf", "rejected": "#c62828"}


def sparkline(values: Sequence[int], outcome: str, width: int = 240, height: int = 36) -> Markup:
    """A bar per value (a minute's requests), scaled to the largest."""
    top = max(values, default=0) or 1
    step = width / max(len(values), 1)
    colour = _COLOURS.get(outcome, "#8d6e63")
    bars = []
    for i, v in enumerate(values):
        h = round(v / top * (height - 2), 1)
        bars.append(f'<rect x="{i * step:.1f}" y="{height - h:.1f}" width="{max(step - 1, 1):.1f}"'
                    f' height="{h}" fill="{colour}"><title>{v}</title></rect>')  # fmt: skip
    return Markup(  # noqa: S704 (numbers only; the label is escaped)
        f'<svg class="chart" role="img" aria-label="{escape(outcome)} per minute" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}">{"".join(bars)}</svg>'
    )


def hbars(counts: dict[str, int], width: int = 320, row: int = 18) -> Markup:
    """A horizontal bar per label (rejections by cause), with the label and count."""
    if not counts:
        return Markup("")
    top = max(counts.values()) or 1
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    parts = []
    for i, (label, n) in enumerate(items):
        w = round(n / top * (width - 170), 1)
        y = i * row
        parts.append(f'<text x="0" y="{y + 13}" font-size="12">{escape(label)[:28]}</text>'
                     f'<rect x="170" y="{y + 3}" width="{w}" height="{row - 6}" fill="#c62828"/>'
                     f'<text x="{174 + w}" y="{y + 13}" font-size="12">{n}</text>')  # fmt: skip
    height = row * len(items)
    return Markup(  # noqa: S704 (numbers only; labels escaped)
        f'<svg class="chart" role="img" aria-label="rejections by cause" width="{width + 40}"'
        f' height="{height}" viewBox="0 0 {width + 40} {height}">{"".join(parts)}</svg>'
    )
