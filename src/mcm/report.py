"""A self-contained HTML report: a contact sheet, videos side by side, a metrics table,
quality vs steps.

``report.html`` needs no other file and nothing online: the GIFs and the contact sheet are
inlined as data URIs (and also written next to it: ``videos/*.gif``, ``contact_sheet.png``),
the charts are hand-written inline SVG, and absolute paths in the settings are shortened.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mcm.errors import InputError
from mcm.media import to_uint8, write_video
from mcm.world.data import cache_dir

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
        f'<svg width="{w}" height="{h}">',  # inline SVG in HTML needs no namespace
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


METHOD_ORDER = ("teacher", "mcm", "lcm")


def sheet_rows(keys) -> list[str]:
    """``method@steps`` keys in the report's order: the teacher from most to fewest steps,
    then MCM and LCM from 1 step up, then any other method as given."""

    def rank(key: str) -> tuple[int, int]:
        method, _, steps = key.partition("@")
        n = int(steps) if steps.isdigit() else 0
        if method not in METHOD_ORDER:
            return len(METHOD_ORDER), 0
        return METHOD_ORDER.index(method), -n if method == "teacher" else n

    return sorted(keys, key=rank)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, cut short with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def contact_sheet(
    samples: dict, prompts: list[str], num_prompts: int = 4, num_frames: int = 4, scale: int = 2
) -> Image.Image:
    """One image of every method at a glance: a row per ``method@steps`` (order of
    :func:`sheet_rows`), a column per prompt, each cell ``num_frames`` evenly spaced frames.

    Args:
        samples: ``method@steps`` -> videos ``[N, 3, F, H, W]`` in ``[-1, 1]``, video ``i``
            for ``prompts[i]``.
        prompts: the prompts, shown above their columns.
        num_prompts: columns (the first prompts).
        num_frames: frames per cell, first to last.
        scale: pixels are repeated this many times in each direction.

    Returns:
        An RGB image, labelled.
    """
    if not samples:
        raise InputError("No videos for the contact sheet: pass at least one method@steps.")
    rows = sheet_rows(samples)
    n = min(num_prompts, len(prompts), *(len(samples[k]) for k in rows))
    strips = {}
    for key in rows:
        frames = samples[key].shape[2]
        picked = np.unique(np.linspace(0, frames - 1, min(num_frames, frames)).round().astype(int))
        for i in range(n):
            strip = to_uint8(samples[key][i][:, picked])  # [k, H, W, 3]
            strip = np.pad(strip, ((0, 0), (0, 0), (0, 1), (0, 0)), constant_values=255)
            strip = np.concatenate(list(strip), axis=1)[:, :-1]  # frames side by side
            strips[key, i] = strip.repeat(scale, axis=0).repeat(scale, axis=1)
    cell_h = max(a.shape[0] for a in strips.values())
    cell_w = max(a.shape[1] for a in strips.values())
    font = ImageFont.load_default(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, text_h = 6, 16
    label_w = int(max(probe.textlength(k, font=font) for k in rows)) + 2 * pad
    sheet = Image.new(
        "RGB",
        (label_w + n * (cell_w + pad) + pad, text_h + pad + len(rows) * (cell_h + pad)),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        x = label_w + i * (cell_w + pad)
        draw.text((x, pad // 2), _fit(draw, prompts[i], font, cell_w), fill="black", font=font)
    for r, key in enumerate(rows):
        y = text_h + pad + r * (cell_h + pad)
        draw.text((pad, y + cell_h // 2), key, fill="black", font=font, anchor="lm")
        for i in range(n):
            sheet.paste(Image.fromarray(strips[key, i]), (label_w + i * (cell_w + pad), y))
    return sheet


def _shown_path(value: str, out: Path) -> str:
    """An absolute path as the report shows it: relative to the report's folder, under
    ``$MCM_CACHE`` or ``~``, else only its last part."""
    path = Path(os.path.abspath(value))
    for root, shown in ((out, "."), (cache_dir(), "$MCM_CACHE"), (Path.home(), "~")):
        root = Path(os.path.abspath(root))
        if path.is_relative_to(root):
            return str(Path(shown) / path.relative_to(root))
    return str(Path("...") / path.name)


def portable_settings(settings, out: Path):
    """``settings`` (JSON-like) with every absolute path string shortened by
    :func:`_shown_path`, so that the report names no folder of the machine it ran on."""
    if isinstance(settings, dict):
        return {k: portable_settings(v, out) for k, v in settings.items()}
    if isinstance(settings, list | tuple):
        return [portable_settings(v, out) for v in settings]
    if isinstance(settings, str) and os.path.isabs(settings):
        return _shown_path(settings, out)
    return settings


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def write_report(
    out: Path, report: dict, samples: dict, prompts: list[str], num_shown: int = 6
) -> Path:
    """Write ``out/report.html``, the GIFs it shows (``out/videos/<method>-<steps>-<i>.gif``)
    and its contact sheet (``out/contact_sheet.png``); the page inlines both.

    Args:
        out: the output folder.
        report: ``{"metrics": {method@steps: metrics}, "settings": {..., "seed": int}}``.
        samples: ``method@steps`` -> videos ``[N, 3, F, H, W]`` in ``[-1, 1]``.
        prompts: the N prompts.
        num_shown: prompts shown as GIFs.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = report["metrics"]
    keys = sheet_rows(samples)
    videos_dir = out / "videos"
    rows = []
    for i, prompt in enumerate(prompts[:num_shown]):
        cells = []
        for key in keys:
            name = f"{key.replace('@', '-')}-{i:02d}.gif"
            gif = write_video(videos_dir / name, samples[key][i], fps=4)
            cells.append(
                f'<td><img class=v src="{_data_uri(gif, "image/gif")}" '
                f'alt="{html.escape(key)}" title="videos/{name}"></td>'
            )
        rows.append(f"<tr><td class=p>{html.escape(prompt)}</td>{''.join(cells)}</tr>")
    sheet_path = out / "contact_sheet.png"
    contact_sheet(samples, prompts).save(sheet_path)
    header = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    charts = "".join(steps_chart(metrics, k, t) for k, t in PLOTTED)
    settings = portable_settings(report["settings"], out)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>mcm demo report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:center}} td.p{{text-align:left}}
img{{image-rendering:pixelated}} img.v{{width:96px;height:96px}} img.sheet{{max-width:100%}}
pre{{background:#f6f6f6;padding:1em}}</style></head><body>
<h1>MCM on the built-in world</h1>
<p>Teacher: the shipped world text-to-video model (guided DDIM). Students: an MCM student (learnable motion
head, latent frame discriminator on high-quality images, mixed trajectories) and a plain LCM student, both
distilled by this run. Metrics are the world metrics over {len(prompts)} prompts (see docs/WORLD.md).</p>
<h2>Contact sheet</h2><p>A row per method@steps, a column per prompt, each cell frames from
first to last (also in contact_sheet.png).</p>
<img class=sheet src="{_data_uri(sheet_path, "image/png")}" alt="contact sheet">
<h2>Metrics</h2>{metrics_table(metrics)}
<h2>Quality vs steps</h2><p><span style="color:{COLOURS["mcm"]}">MCM</span>,
<span style="color:{COLOURS["lcm"]}">LCM</span>, teacher DDIM-50 dashed.</p><div>{charts}</div>
<h2>Videos (seed {report["settings"]["seed"]})</h2><p>Also in videos/.</p>
<table><tr><th>prompt</th>{header}</tr>{"".join(rows)}</table>
<h2>Settings</h2><p>Absolute paths shortened; settings.json has them in full.</p>
<pre>{html.escape(json.dumps(settings, indent=1))}</pre>
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
