"""`mcm app` in a real browser: the app runs as its own process on a free loopback port, and
Debian's chromium, driven by Playwright, types a prompt, clicks Generate and waits for the
videos, their wall times and speed-ups.

The test fails (it does not skip) without chromium: `make browser` installs it.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from mcm.models import attach_lora, export_student, load_teacher

PROMPT = "a green triangle moving right"
TEACHER_STEPS = 8  # the world teacher's 50 would only make the test slower
SERVE_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def student(tmp_path):
    """A student export of the world teacher (an untrained LoRA: cheap, and a real export)."""
    bundle = load_teacher("world", device="cpu")
    attach_lora(bundle.denoiser, rank=4, alpha=4)
    return export_student(bundle, tmp_path / "student", sampling={"num_frames": 8})


@pytest.fixture
def start_app(student, tmp_path):
    """A function that starts `mcm app --student ...` on a free port and returns another, which
    waits until the app answers and returns its URL (the browser starts meanwhile). The app
    stops after the test."""
    processes = []
    log_path = tmp_path / "app.log"

    def start():
        port = free_port()
        command = [sys.executable, "-m", "mcm", "app", "--student", str(student)]
        command += ["--port", str(port), "--threads", "1", "--out", str(tmp_path / "videos")]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        processes.append(process)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + SERVE_TIMEOUT_S

        def serving() -> str:
            while True:
                assert process.poll() is None, f"mcm app exited:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, (
                    f"mcm app is not serving:\n{log_path.read_text()}"
                )
                try:
                    with urllib.request.urlopen(url, timeout=2):
                        return url
                except OSError:
                    time.sleep(0.25)

        return serving

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_the_app_generates_and_shows_videos_with_timings(start_app, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: `make browser` installs Debian's chromium."
    serving = start_app()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(serving())
            page.fill("#prompt textarea", " ")
            page.click("#generate")
            page.get_by_text("Empty prompt: type what the video should show.").wait_for()
            page.fill("#prompt textarea", PROMPT)
            steps = page.locator("#teacher-steps input[type=number]")
            steps.fill(str(TEACHER_STEPS))
            steps.press("Enter")
            page.click("#generate")
            # gradio's progress indicator: the model being sampled, or the teacher's steps
            progress = re.compile(rf"sampling |/{TEACHER_STEPS} step")
            page.get_by_text(progress).first.wait_for(timeout=20_000)
            page.wait_for_selector("#timings table", timeout=120_000)
            table = page.inner_text("#timings")
            slots = ["#video-teacher"] + [f"#video-student-{n}" for n in (1, 2, 4)]
            page.wait_for_function(
                """ids => ids.every(id => {
                    const v = document.querySelector(id + ' video');
                    return v && v.readyState >= 2 && v.videoWidth > 0;
                })""",
                arg=slots,
                timeout=30_000,
            )
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("MCM_SCREENSHOT_DIR"):
                folder = Path(os.environ["MCM_SCREENSHOT_DIR"])
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, folder / "app.png")
            for slot in slots:
                video = page.locator(f"{slot} video")
                assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [256, 256]
                response = page.request.get(video.get_attribute("src"))
                assert response.ok and response.body()[4:8] == b"ftyp", slot  # an mp4
            labels = [page.inner_text(slot) for slot in slots]
        finally:
            browser.close()
    rows = [f"teacher, {TEACHER_STEPS} steps, CFG 2.5"]
    rows += ["student, 1 step", "student, 2 steps", "student, 4 steps"]
    for row, label in zip(rows, labels):
        # the table: model, NFE, time, speed-up; the video's label: "model: time, speed-up"
        assert re.search(re.escape(row) + r"\s+\d+\s+\d+\.\d\d s\s+\d+\.\dx", table), (row, table)
        assert re.search(re.escape(row) + r": \d+\.\d\d s, \d+\.\dx", label), (row, label)
    assert re.search(r"teacher, .*\s1\.0x", table), table
