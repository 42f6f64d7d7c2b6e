"""Small SVG charts for the model health page, drawn from the monitor's figures.

Hand-made SVG rather than matplotlib: the service imports no plotting stack (a worker stays
small and starts fast), the charts scale and print sharply, and each one carries a title and a
description for screen readers; the page puts the same figures in a table beside it. Signals are
told apart by marker shape as well as colour (Okabe-Ito colours, safe for colour blindness).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

SIGNALS = ("audit", "author", "reports")
COLOURS = {"audit": "#0072B2", "author": "#B35C00", "reports": "#007A5A"}
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _marker(signal: str, x: float, y: float) -> str:
    c = COLOURS.get(signal, "#333")
    if signal == "author":
        return f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{c}"/>'
    if signal == "reports":
        pts = f"{x:.1f},{y - 5:.1f} {x + 5:.1f},{y:.1f} {x:.1f},{y + 5:.1f} {x - 5:.1f},{y:.1f}"
        return f'<polygon points="{pts}" fill="{c}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{c}"/>'


def _open(width: int, height: int, title: str, desc: str, ident: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-labelledby="{ident}-t {ident}-d" class="chart">'
        f'<title id="{ident}-t">{escape(title)}</title><desc id="{ident}-d">{escape(desc)}</desc>'
    )


def _legend(x: float, y: float, signals: Sequence[str]) -> str:
    out = []
    for k, signal in enumerate(signals):
        sx = x + k * 110
        out.append(_marker(signal, sx, y - 4))
        out.append(f'<text x="{sx + 10}" y="{y}" {FONT}>{escape(signal)}</text>')
    return "".join(out)


def _percent_grid(
    pos, target: float, *, across: tuple[float, float], label_at: float, flip: bool = False
) -> list[str]:
    """Grid lines and labels at 0, 20, ... 100% and the target as a dashed line. `pos` maps a
    share to a coordinate; lines run `across` the other axis. Vertical lines with labels below,
    or (`flip`) horizontal lines with labels on the left."""
    a, b = across

    def line(c: float, style: str) -> str:
        if flip:
            return f'<line x1="{a}" x2="{b}" y1="{c:.1f}" y2="{c:.1f}" {style}/>'
        return f'<line x1="{c:.1f}" x2="{c:.1f}" y1="{a}" y2="{b}" {style}/>'

    out = []
    for k in range(0, 11, 2):
        c = pos(k / 10)
        where = (
            f'x="{label_at}" y="{c + 4:.1f}" text-anchor="end"' if flip
            else f'x="{c:.1f}" y="{label_at}" text-anchor="middle"'
        )  # fmt: skip
        out.append(line(c, 'stroke="#e2e2e2"') + f"<text {where} {FONT}>{k * 10}%</text>")
    out.append(line(pos(target), 'stroke="#555" stroke-dasharray="4 3"'))
    return out


def interval_chart(rows: Sequence[Mapping], target: float, ident: str = "precision-by-tag") -> str:
    """Online precision per tag (one line each) and proxy signal (one marker each), with the
    95% interval as a whisker and the target as a dashed line. `rows`: the monitor's `online`
    entries (tag, signal, precision, ci_low, ci_high, n)."""
    tags = sorted({str(r["tag"]) for r in rows if r.get("precision") is not None})
    tags = [t for t in tags if t != "all"] + (["all"] if "all" in tags else [])
    left, right, top, row_h = 190, 20, 34, 30
    width = 680
    height = top + row_h * max(1, len(tags)) + 34
    span = width - left - right

    def px(p: float) -> float:
        return left + span * max(0.0, min(1.0, p))

    parts = [
        _open(
            width,
            height,
            "Online auto-tag precision by tag",
            f"Dots: precision from each proxy signal with its 95% interval; dashed line: the "
            f"{target:.0%} target. The table below gives the same figures.",
            ident,
        ),
        _legend(left, 18, SIGNALS),
        *_percent_grid(px, target, across=(top - 6, height - 28), label_at=height - 12),
    ]
    for i, tag in enumerate(tags):
        y0 = top + i * row_h + row_h / 2
        weight = ' font-weight="bold"' if tag == "all" else ""
        parts.append(
            f'<text x="{left - 8}" y="{y0 + 4:.1f}" text-anchor="end" {FONT}{weight}>'
            f"{escape(tag)}</text>"
        )
        for j, signal in enumerate(SIGNALS):
            r = next(
                (r for r in rows if r["tag"] == tag and r["signal"] == signal
                 and r.get("precision") is not None),
                None,
            )  # fmt: skip
            if r is None:
                continue
            y = y0 + (j - 1) * 8
            c = COLOURS[signal]
            parts.append(
                f'<line x1="{px(r["ci_low"]):.1f}" x2="{px(r["ci_high"]):.1f}" y1="{y:.1f}" '
                f'y2="{y:.1f}" stroke="{c}" stroke-width="2"/>'
            )
            parts.append(_marker(signal, px(r["precision"]), y))
    parts.append("</svg>")
    return "".join(parts)


def timeline_chart(timeline: Sequence[Mapping], target: float, ident: str = "timeline") -> str:
    """Overall online precision per batch of the stream, one line per proxy signal."""
    width, height, left, right, top, bottom = 680, 240, 50, 20, 30, 36
    n = len(timeline)
    span_x, span_y = width - left - right, height - top - bottom

    def px(k: int) -> float:
        return left + (span_x * k / (n - 1) if n > 1 else span_x / 2)

    def py(p: float) -> float:
        return top + span_y * (1 - max(0.0, min(1.0, p)))

    parts = [
        _open(
            width,
            height,
            "Online precision over the stream",
            f"Overall precision of each batch from each proxy signal; dashed line: the "
            f"{target:.0%} target.",
            ident,
        ),
        _legend(left, 16, SIGNALS),
        *_percent_grid(py, target, across=(left, width - right), label_at=left - 6, flip=True),
    ]
    for k, entry in enumerate(timeline):
        parts.append(
            f'<text x="{px(k):.1f}" y="{height - 14}" text-anchor="middle" {FONT}>'
            f"{escape(str(entry.get('batch', k)))}</text>"
        )
    for signal in SIGNALS:
        pts = [
            (k, e["signals"][signal])
            for k, e in enumerate(timeline)
            if (e.get("signals") or {}).get(signal, {}).get("precision") is not None
        ]
        if not pts:
            continue
        c = COLOURS[signal]
        path = " ".join(f"{px(k):.1f},{py(r['precision']):.1f}" for k, r in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="1.5"/>')
        for k, r in pts:
            parts.append(_marker(signal, px(k), py(r["precision"])))
    parts.append(
        f'<text x="{left + span_x / 2:.1f}" y="{height - 1}" text-anchor="middle" {FONT}>'
        "batch of the stream</text></svg>"
    )
    return "".join(parts)


def pvalue_chart(pvalues: Mapping[str, float], alpha: float, ident: str = "drift") -> str:
    """Drift tests as bars of -log10(adjusted p); past the dashed line a test raises the alarm."""
    names = list(pvalues)
    left, right, top, row_h = 190, 30, 12, 26
    width = 680
    height = top + row_h * max(1, len(names)) + 34
    scores = {k: -math.log10(max(float(v), 1e-12)) for k, v in pvalues.items()}
    alarm = -math.log10(alpha)
    top_score = max([alarm * 1.5, *scores.values()])
    span = width - left - right

    def px(s: float) -> float:
        return left + span * s / top_score

    parts = [
        _open(
            width,
            height,
            "Drift tests against the reference profile",
            f"Bars: -log10 of each test's adjusted p-value; past the dashed line "
            f"(p < {alpha}) the test raises the alarm.",
            ident,
        )
    ]
    for i, name in enumerate(names):
        y = top + i * row_h
        fired = pvalues[name] < alpha
        colour = "#B00020" if fired else "#0072B2"
        parts.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" {FONT}>{escape(name)}</text>'
            f'<rect x="{left}" y="{y + 4}" width="{max(1.0, px(scores[name]) - left):.1f}" '
            f'height="{row_h - 10}" fill="{colour}"/>'
        )
    xa = px(alarm)
    parts.append(
        f'<line x1="{xa:.1f}" x2="{xa:.1f}" y1="{top}" y2="{height - 28}" stroke="#B00020" '
        f'stroke-dasharray="4 3"/><text x="{xa:.1f}" y="{height - 12}" text-anchor="middle" '
        f"{FONT}>alarm: p &lt; {alpha}</text></svg>"
    )
    return "".join(parts)
