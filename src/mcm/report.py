"""A self-contained HTML report: videos side by side, a metrics table, quality vs steps.

No plotting library: the chart is a small hand-written SVG.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from mcm.media import write_video

TABLE_COLUMNS = (
    ("prompt_accuracy", "prompt acc. &uarr;"),
    ("motion_accuracy", "motion acc. &uarr;"),
    ("watermark_score", "watermark &darr;"),
    ("sharpness", "sharpness (clean = 1)"),
    ("frame_fd", "frame FD &darr;"),
    ("video_fd", "video FD &darr;"),
    ("nfe", "NFE"),
    ("seconds_per_video", "s / video"),
)
PLOTTED = (
    ("prompt_accuracy", "prompt accuracy"),
    ("motion_accuracy", "motion accuracy"),
    ("watermark_score", "watermark score"),
    ("sharpness", "sharpness"),
)
COLOURS = {"mcm": "#d62728", "lcm": "#1f77b4", "teacher": "#555"}


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else (f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}")
    return html.escape(str(v))


def metrics_table(metrics: dict[str, dict]) -> str:
    head = "".join(f"<th>{label}</th>" for _, label in TABLE_COLUMNS)
    rows = "".join(
        f"<tr><td>{html.escape(key)}</td>"
        + "".join(f"<td>{_fmt(m.get(c))}</td>" for c, _ in TABLE_COLUMNS)
        + "</tr>"
        for key, m in metrics.items()
    )
    return f"<table><tr><th>method@steps</th>{head}</tr>{rows}</table>"


def steps_chart(metrics: dict[str, dict], key: str, title: str, w: int = 240, h: int = 160) -> str:
    """SVG line chart of one metric against student steps (log2 axis), teacher@50 dashed."""
    series: dict[str, list[tuple[int, float]]] = {}
    for name, m in metrics.items():
        method, steps = name.split("@")
        if method in ("mcm", "lcm") and not math.isnan(m.get(key, math.nan)):
            series.setdefault(method, []).append((int(steps), float(m[key])))
    values = [v for pts in series.values() for _, v in pts]
    teacher = metrics.get("teacher@50", {}).get(key)
    if teacher is not None and not math.isnan(teacher):
        values.append(teacher)
    if not values:
        return ""
    lo, hi = min(0.0, min(values)), max(1.0, max(values))
    steps = sorted({s for pts in series.values() for s, _ in pts})
    pad = 30

    def x(s):
        span = max(1e-9, math.log2(steps[-1]) - math.log2(steps[0])) if steps else 1
        return pad + (w - 2 * pad) * (
            (math.log2(s) - math.log2(steps[0])) / span if len(steps) > 1 else 0.5
        )

    def y(v):
        return h - pad - (h - 2 * pad) * (v - lo) / (hi - lo)

    parts = [
        f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{w / 2}" y="14" text-anchor="middle" font-size="12">{html.escape(title)}</text>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>',
    ]
    for s in steps:
        parts.append(
            f'<text x="{x(s):.1f}" y="{h - pad + 14}" text-anchor="middle" font-size="10">{s}</text>'
        )
    for v in (lo, hi):
        parts.append(
            f'<text x="{pad - 4}" y="{y(v) + 3:.1f}" text-anchor="end" font-size="10">{v:.2g}</text>'
        )
    if teacher is not None and not math.isnan(teacher):
        parts.append(
            f'<line x1="{pad}" y1="{y(teacher):.1f}" x2="{w - pad}" y2="{y(teacher):.1f}" '
            f'stroke="{COLOURS["teacher"]}" stroke-dasharray="4 3"/>'
        )
    for method, pts in series.items():
        pts.sort()
        path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in pts)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{COLOURS[method]}" stroke-width="2"/>'
        )
        parts += [
            f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="3" fill="{COLOURS[method]}"/>'
            for s, v in pts
        ]
    parts.append(
        f'<text x="{w / 2}" y="{h - 4}" text-anchor="middle" font-size="10">student steps</text></svg>'
    )
    return "".join(parts)


def write_report(
    out: Path, report: dict, samples: dict, prompts: list[str], num_shown: int = 6
) -> Path:
    """Write out/report.html and the GIFs it shows (out/videos/<method@steps>-<i>.gif)."""
    out = Path(out)
    metrics = report["metrics"]
    videos_dir = out / "videos"
    rows = []
    for i, prompt in enumerate(prompts[:num_shown]):
        cells = []
        for key, videos in samples.items():
            name = f"{key.replace('@', '-')}-{i:02d}.gif"
            write_video(videos_dir / name, videos[i], fps=4)
            cells.append(f'<td><img src="videos/{name}" alt="{html.escape(key)}"></td>')
        rows.append(f"<tr><td class=p>{html.escape(prompt)}</td>{''.join(cells)}</tr>")
    header = "".join(f"<th>{html.escape(k)}</th>" for k in samples)
    charts = "".join(steps_chart(metrics, k, t) for k, t in PLOTTED)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>mcm demo report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:center}} td.p{{text-align:left}}
img{{width:96px;height:96px;image-rendering:pixelated}} pre{{background:#f6f6f6;padding:1em}}</style></head><body>
<h1>MCM on the built-in world</h1>
<p>Teacher: the shipped world text-to-video model (guided DDIM). Students: an MCM student (learnable motion
head, latent frame discriminator on high-quality images, mixed trajectories) and a plain LCM student, both
distilled by this run. Metrics are the world metrics over {len(prompts)} prompts (see docs/WORLD.md).</p>
<h2>Metrics</h2>{metrics_table(metrics)}
<h2>Quality vs steps</h2><p><span style="color:{COLOURS["mcm"]}">MCM</span>,
<span style="color:{COLOURS["lcm"]}">LCM</span>, teacher DDIM-50 dashed.</p><div>{charts}</div>
<h2>Videos (seed {report["settings"]["seed"]})</h2>
<table><tr><th>prompt</th>{header}</tr>{"".join(rows)}</table>
<h2>Settings</h2><pre>{html.escape(json.dumps(report["settings"], indent=1))}</pre>
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
