"""Draw the Grafana dashboard's panels from query results, as a PNG (headless Chromium).

    E2AE_DASHBOARD_SNAPSHOT=/tmp/snapshot.json \\
        .venv/bin/python -m pytest tests/integration/test_ops_prometheus.py
    .venv/bin/python tools/dashboard_snapshot.py /tmp/snapshot.json docs/dashboard.png

The integration test runs every panel's query over its own run against a real
Prometheus scraping a real edge (``query_range``) and, with
``E2AE_DASHBOARD_SNAPSHOT`` set, writes the results; this tool lays the panels out
on the dashboard's grid (``gridPos``), draws each series as an SVG line (a stat
panel as its last value), and has Chromium take a screenshot of the page.  It
stands in for Grafana, which Debian does not package: the picture shows the data,
not Grafana's own look.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CELL_W, CELL_H = 62, 34  # pixels per grid unit (24 columns)
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#b877d9", "#8ab8ff", "#f2495c", "#37872d",
          "#fade2a", "#1f60c4", "#c4162a", "#8f3bb8"]


def legend(fmt: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt) if fmt else ""
    return " ".join(text.split()) or "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__") + "}"


def number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    suffix = {"reqps": "/s", "pps": " p/s", "bps": " b/s"}.get(unit, "")
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{prefix}{suffix}"
    return f"{value:.2f}".rstrip("0").rstrip(".") + suffix if value != int(value) else f"{int(value)}{suffix}"


def series_of(panel: dict) -> list[tuple[str, list[tuple[float, float]]]]:
    out = []
    for target in panel["targets"]:
        for series in target["series"]:
            points = [(float(t), float(v)) for t, v in series["values"]]
            out.append((legend(target["legend"], series["metric"]), points))
    return out


def timeseries_svg(panel: dict, width: int, height: int, start: float, end: float) -> str:
    lines = series_of(panel)
    values = [v for _, pts in lines for _, v in pts if not math.isnan(v)]
    top = max(values + [0.0]) or 1.0
    bottom = min(values + [0.0])
    plot_w, plot_h, left = width - 70, height - 30, 60
    out = [f'<svg width="{width}" height="{height}">']
    for i in range(5):
        y = 5 + plot_h * i / 4
        value = top - (top - bottom) * i / 4
        out.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
                   f'{html.escape(number(value, panel["unit"]))}</text>')
    span = max(end - start, 1.0)
    for n, (_, points) in enumerate(lines):
        color = COLORS[n % len(COLORS)]
        path, pen = [], "M"
        for t, v in points:
            if math.isnan(v):
                pen = "M"
                continue
            x = left + plot_w * (t - start) / span
            y = 5 + plot_h * (top - v) / ((top - bottom) or 1.0)
            path.append(f"{pen}{x:.1f},{y:.1f}")
            pen = "L"
        if path:
            out.append(f'<path d="{" ".join(path)}" stroke="{color}" fill="none" stroke-width="1.6"/>')
    out.append(f'<text x="{left}" y="{height - 4}" class="axis">-{int(span)} s</text>'
               f'<text x="{width - 8}" y="{height - 4}" class="axis" text-anchor="end">now</text></svg>')
    items = "".join(f'<span><i style="background:{COLORS[n % len(COLORS)]}"></i>{html.escape(name)}</span>'
                    for n, (name, _) in enumerate(lines))
    return "".join(out) + f'<div class="legend">{items}</div>'


def stat_html(panel: dict) -> str:
    cells = []
    for name, points in series_of(panel):
        last = next((v for _, v in reversed(points) if not math.isnan(v)), float("nan"))
        alert = "red" if last >= 1 and "ismatch" in panel["title"] else ("orange" if last >= 1 else "green")
        shown = last if math.isnan(last) else round(last)  # increase() extrapolates: 1.06 is one event
        cells.append(f'<div class="stat {alert}"><b>{html.escape(number(shown, "short"))}</b>'
                     f'<span>{html.escape(name)}</span></div>')
    return "".join(cells)


def page(snapshot: dict) -> tuple[str, int]:
    parts, bottom, row_y = [], 0, 0
    for panel in snapshot["panels"]:
        if panel["type"] == "row":
            continue
        g = panel["gridPos"]
        x, y, w, h = g["x"] * CELL_W, g["y"] * CELL_H, g["w"] * CELL_W - 8, g["h"] * CELL_H - 8
        body = (stat_html(panel) if panel["type"] == "stat"
                else timeseries_svg(panel, w - 16, h - 76, snapshot["start"], snapshot["end"]))
        parts.append(f'<div class="panel" style="left:{x}px;top:{y + 44}px;width:{w}px;height:{h}px">'
                     f'<h3>{html.escape(panel["title"])}</h3>{body}</div>')
        bottom = max(bottom, y + h + 60)
        row_y = max(row_y, y)
    style = """
body{margin:0;background:#111217;color:#ccccdc;font:12px Inter,Helvetica,Arial,sans-serif}
h1{font-size:16px;margin:0;padding:12px 16px;font-weight:500}
.panel{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:3px;padding:6px 8px;
 box-sizing:border-box;overflow:hidden}
h3{font-size:12px;margin:0 0 4px;font-weight:500;color:#d8d9da}
.grid{stroke:#2c3235;stroke-width:1}.axis{fill:#8e8e8e;font-size:10px}
.legend{font-size:10px;line-height:14px;max-height:52px;overflow:hidden}
.legend span{margin-right:10px;white-space:nowrap}.legend i{display:inline-block;width:10px;height:3px;
 margin-right:4px;vertical-align:middle}
.stat{display:inline-block;margin:6px;padding:10px 14px;border-radius:3px;text-align:center;min-width:90px}
.stat b{display:block;font-size:30px;font-weight:500;color:#fff}.stat span{font-size:11px}
.green{background:#1a4d2a}.orange{background:#8a4a0c}.red{background:#a4161a}
"""
    title = html.escape(snapshot["title"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>"
            f"<h1>{title} &middot; live test run, Prometheus scraping Kamailio + plugin and mediad</h1>"
            + "".join(parts) + "</body></html>", bottom)


def screenshot(html_text: str, height: int, out: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("dashboard_snapshot: chromium is not installed")
    with tempfile.TemporaryDirectory(prefix="e2ae-snapshot-") as work:
        page_path = Path(work) / "dashboard.html"
        page_path.write_text(html_text)
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={work}/profile", f"--window-size={24 * CELL_W},{height}",
                        f"--screenshot={out.resolve()}", page_path.as_uri()],
                       check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshot", type=Path, help="query results written by the integration test")
    parser.add_argument("png", type=Path, help="the picture to write")
    args = parser.parse_args(argv)
    text, height = page(json.loads(args.snapshot.read_text()))
    screenshot(text, height, args.png)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
