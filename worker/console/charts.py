"""A line chart drawn on the server as SVG geometry (no script, no build step): one chart per
currency (CAD and USD are never added up), one line per merchant, a point per business day.

`net_charts(chart)` takes the overview's `chart` (worker/reports/views.py) and returns, per
currency, the lines' points in pixels, the y axis's ticks with their amounts, and the x labels;
the template draws them. The amounts shown are the overview's own, as decimal strings.
"""

from __future__ import annotations

from typing import Any

from worker import money

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 84, 28, 12, 28
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


def _nice_step(span: int) -> int:
    """A step of 1, 2 or 5 times a power of ten (in cents) giving 3 to 6 ticks over span."""
    step = 1
    while span / step > 5:
        for factor in (2, 5, 10):
            if span / (step * factor) <= 5:
                return step * factor
        step *= 10
    return step


def net_charts(chart: dict[str, Any]) -> list[dict[str, Any]]:
    """One drawable chart per currency of the overview's chart data."""
    days: list[str] = chart["days"]
    out = []
    for currency in sorted({s["currency"] for s in chart["series"]}):
        series = [s for s in chart["series"] if s["currency"] == currency]
        values = [p["net_cents"] for s in series for p in s["points"]]
        low, high = min(0, *values), max(0, *values)
        step = _nice_step(max(high - low, 100))
        low = (low // step) * step
        high = -((-high) // step) * step if high > low else low + step
        plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

        def x(i: int) -> float:
            return round(LEFT + (plot_w * i / max(len(days) - 1, 1)), 1)

        def y(cents: int) -> float:
            return round(TOP + plot_h * (high - cents) / (high - low), 1)

        lines = []
        for n, s in enumerate(series):
            points = [(x(i), y(p["net_cents"])) for i, p in enumerate(s["points"])]
            lines.append({"mch_id": s["mch_id"], "colour": COLOURS[n % len(COLOURS)], "total_net": s["total_net"],
                          "points": " ".join(f"{px},{py}" for px, py in points),
                          "dots": [{"x": px, "y": py, "date": days[i], "net": s["points"][i]["net"]}
                                   for i, (px, py) in enumerate(points)]})
        ticks = [{"y": y(v), "label": money.decimal(v)} for v in range(low, high + 1, step)]
        labels = [{"x": x(i), "text": d[5:]} for i, d in enumerate(days) if i % 5 == 0 or i == len(days) - 1]
        out.append({"currency": currency, "width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT,
                    "top": TOP, "bottom": HEIGHT - BOTTOM, "zero": y(0), "lines": lines, "ticks": ticks,
                    "labels": labels})
    return out
