"""Tiny SVG charts for the benchmark results: grouped bars (linear or log scale) and lines.

Place in the flow: scripts/bench-peers runs the brokers and keeps raw JSON reports;
render.py reads them and calls these functions to write docs/bench/*.svg. Standard library
only, so the results file can be rebuilt anywhere Python 3 runs (no plotting package to
install, nothing to compile).
"""

import math
from xml.sax.saxutils import escape

# One colour per broker, the same in every chart.
COLOURS = {
    "tidegate": "#1f6fb4",
    "mosquitto": "#e07b00",
    "rumqttd": "#2e9d3a",
}
FALLBACK = ["#7a4fa3", "#b03a2e", "#555555"]

WIDTH = 720
HEIGHT = 360
LEFT, RIGHT, TOP, BOTTOM = 80, 150, 40, 60


def colour(name, i):
    return COLOURS.get(name, FALLBACK[i % len(FALLBACK)])


def nice_step(span):
    """A round tick step giving about five ticks over span."""
    if span <= 0:
        return 1.0
    raw = span / 5
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt_tick(v):
    if v == 0:
        return "0"
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


class Axis:
    """Maps data values to the plot's y pixels, linear or log10."""

    def __init__(self, values, log):
        vals = [v for v in values if v is not None and (v > 0 or not log)]
        self.log = log
        if log:
            lo = min(vals) if vals else 1.0
            hi = max(vals) if vals else 10.0
            self.lo = 10 ** math.floor(math.log10(lo))
            self.hi = 10 ** math.ceil(math.log10(hi))
            if self.hi <= self.lo:
                self.hi = self.lo * 10
        else:
            hi = max(vals) if vals else 1.0
            step = nice_step(hi)
            self.lo = 0.0
            self.hi = step * math.ceil(hi / step) if hi > 0 else 1.0
            self.step = step

    def y(self, v):
        h = HEIGHT - TOP - BOTTOM
        if self.log:
            v = max(v, self.lo)
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return HEIGHT - BOTTOM - f * h

    def ticks(self):
        if self.log:
            out, v = [], self.lo
            while v <= self.hi * 1.0001:
                out.append(v)
                v *= 10
            return out
        n = int(round((self.hi - self.lo) / self.step))
        return [self.lo + i * self.step for i in range(n + 1)]


def frame(title, ylabel, axis):
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
        f'<text transform="translate(18,{(HEIGHT - BOTTOM + TOP) / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(ylabel)}</text>',
    ]
    for t in axis.ticks():
        y = axis.y(t)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_tick(t)}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#333"/>'
    )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" '
        f'y2="{HEIGHT - BOTTOM}" stroke="#333"/>'
    )
    return parts


def legend(names):
    parts = []
    for i, name in enumerate(names):
        y = TOP + 10 + i * 20
        x = WIDTH - RIGHT + 15
        parts.append(
            f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{colour(name, i)}"/>'
        )
        parts.append(f'<text x="{x + 18}" y="{y}">{escape(name)}</text>')
    return parts


def grouped_bars(title, ylabel, groups, series, log=False, note=None, labels=False):
    """groups: x labels; series: list of (name, [value or None per group]); labels: print
    each bar's value above it (for small values a reader could not see)."""
    values = [v for _, vs in series for v in vs if v is not None]
    axis = Axis(values, log)
    parts = frame(title, ylabel, axis)
    plot_w = WIDTH - LEFT - RIGHT
    gw = plot_w / max(len(groups), 1)
    bw = gw * 0.8 / max(len(series), 1)
    base = HEIGHT - BOTTOM
    for gi, g in enumerate(groups):
        gx = LEFT + gi * gw + gw * 0.1
        parts.append(
            f'<text x="{LEFT + gi * gw + gw / 2:.1f}" y="{base + 18}" '
            f'text-anchor="middle">{escape(g)}</text>'
        )
        for si, (name, vs) in enumerate(series):
            v = vs[gi] if gi < len(vs) else None
            x = gx + si * bw
            if v is None:
                parts.append(
                    f'<text x="{x + bw / 2:.1f}" y="{base - 4}" text-anchor="middle" '
                    f'font-size="9" fill="#999">n/a</text>'
                )
                continue
            y = axis.y(v)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw * 0.92:.1f}" '
                f'height="{max(base - y, 0.5):.1f}" fill="{colour(name, si)}">'
                f"<title>{escape(name)} {escape(g)}: {v:.4g}</title></rect>"
            )
            if labels:
                parts.append(
                    f'<text x="{x + bw * 0.46:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                    f'font-size="10">{v:.3g}</text>'
                )
    if note:
        parts.append(
            f'<text x="{LEFT}" y="{HEIGHT - 12}" font-size="10" fill="#555">{escape(note)}</text>'
        )
    parts += legend([n for n, _ in series])
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def lines(title, xlabel, ylabel, series, note=None):
    """series: list of (name, [(x, y), ...]); linear axes from zero."""
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    axis = Axis(ys, False)
    parts = frame(title, ylabel, axis)
    xhi = max(xs) if xs else 1.0
    xstep = nice_step(xhi)
    xhi = xstep * math.ceil(xhi / xstep) if xhi > 0 else 1.0
    plot_w = WIDTH - LEFT - RIGHT

    def px(x):
        return LEFT + x / xhi * plot_w

    t = 0.0
    while t <= xhi * 1.0001:
        parts.append(
            f'<text x="{px(t):.1f}" y="{HEIGHT - BOTTOM + 18}" '
            f'text-anchor="middle">{fmt_tick(t)}</text>'
        )
        t += xstep
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - BOTTOM + 36}" '
        f'text-anchor="middle">{escape(xlabel)}</text>'
    )
    for si, (name, pts) in enumerate(series):
        if not pts:
            continue
        c = colour(name, si)
        path = " ".join(f"{px(x):.1f},{axis.y(y):.1f}" for x, y in sorted(pts))
        parts.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{axis.y(y):.1f}" r="3" fill="{c}">'
                f"<title>{escape(name)}: {fmt_tick(x)} → {y:.4g}</title></circle>"
            )
    if note:
        parts.append(
            f'<text x="{LEFT}" y="{HEIGHT - 6}" font-size="10" fill="#555">{escape(note)}</text>'
        )
    parts += legend([n for n, _ in series])
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
