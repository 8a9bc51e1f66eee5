"""The demo report: one HTML file that needs nothing else (GIFs and contact sheet inlined, no
URL, no absolute path), and a contact sheet with a row per method@steps, 1-step rows included."""

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from mcm.errors import InputError
from mcm.report import contact_sheet, sheet_rows, write_report

KEYS = ["teacher@50", "teacher@4"] + [f"{m}@{s}" for m in ("mcm", "lcm") for s in (1, 2, 4)]
PROMPTS = ["a red circle moving left", "a green square moving right", "a blue cross moving up"]


def _solid_samples(keys, num_prompts=3, frames=4, size=8) -> dict:
    """key -> [N, 3, F, H, W]: video i of row r is one colour, distinct for every (r, i)."""
    samples = {}
    for r, key in enumerate(keys):
        colours = torch.tensor([[r / 8, i / 3, 1 - r / 8] for i in range(num_prompts)]) * 2 - 1
        samples[key] = colours[:, :, None, None, None].expand(-1, -1, frames, size, size).clone()
    return samples


def test_rows_go_teacher_by_descending_steps_then_mcm_then_lcm_from_one_step():
    shuffled = ["lcm@2", "mcm@4", "teacher@4", "other@3", "lcm@1", "teacher@50", "mcm@1"]
    assert sheet_rows(shuffled) == [
        "teacher@50", "teacher@4", "mcm@1", "mcm@4", "lcm@1", "lcm@2", "other@3",
    ]  # fmt: skip


def test_the_contact_sheet_puts_each_method_on_its_row_and_each_prompt_in_its_column():
    samples = _solid_samples(KEYS[::-1])  # rows come out in sheet order whatever the input's
    sheet = np.array(contact_sheet(samples, PROMPTS, num_prompts=3, num_frames=4, scale=2))
    centres = {}
    for key, videos in samples.items():
        for i, video in enumerate(videos):
            colour = ((video[:, 0, 0, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
            ys, xs = np.nonzero((sheet == colour).all(-1))
            assert len(ys) == 4 * (2 * 8) ** 2  # 4 frames of 8x8 pixels, each pixel 2x2
            centres[key, i] = ys.mean(), xs.mean()
    for i in range(3):
        ys = [centres[key, i][0] for key in sheet_rows(samples)]
        assert ys == sorted(ys)
    for key in samples:
        assert [centres[key, i][1] for i in range(3)] == sorted(
            centres[key, i][1] for i in range(3)
        )


def test_a_contact_sheet_needs_videos():
    with pytest.raises(InputError, match="at least one method@steps"):
        contact_sheet({}, PROMPTS)


def test_the_report_is_one_self_contained_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo-out"
    samples = _solid_samples(KEYS)
    metrics = {k: {"prompt_accuracy": 0.5, "sharpness": 0.7, "nfe": 1} for k in KEYS}
    settings = {
        "seed": 0,
        "prompts": PROMPTS,
        "configs": {
            "mcm": {
                "output_dir": str(out / "mcm"),
                "source": str(tmp_path / "cache" / "world-data" / "lowq_video-n512-seed0"),
                "teacher": "/opt/models/teacher",
                "resume": str(Path.home() / "runs" / "mcm"),
                "dinov2": "facebook/dinov2-small",
            }
        },
    }
    path = write_report(out, {"metrics": metrics, "settings": settings}, samples, PROMPTS)
    page = path.read_text()

    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 1 + len(KEYS) * len(PROMPTS)  # the contact sheet and every GIF
    assert all(s.startswith(("data:image/gif;base64,", "data:image/png;base64,")) for s in sources)
    for absent in ("http:", "https:", "file:", "href=", "url(", str(tmp_path), "/opt/"):
        assert absent not in page
    assert "&quot;/" not in page  # no absolute path in the settings
    shown = ("mcm", "$MCM_CACHE/world-data/lowq_video-n512-seed0", ".../teacher", "~/runs/mcm")
    shown += ("facebook/dinov2-small",)  # not a path: kept
    for value in shown:
        assert f"&quot;{value}&quot;" in page

    # every method, the 1-step students too, has its column of GIFs; each GIF is the video
    header = re.search(r"<tr><th>prompt</th>(.*?)</tr>", page).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == KEYS
    gif = base64.b64decode(sources[1].split(",", 1)[1])
    frames = [
        np.array(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(io.BytesIO(gif)))
    ]
    assert len(frames) == 4 and gif == (out / "videos" / "teacher-50-00.gif").read_bytes()
    assert (out / "contact_sheet.png").read_bytes() == base64.b64decode(sources[0].split(",")[1])
