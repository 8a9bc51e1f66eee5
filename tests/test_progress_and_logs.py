"""What a user sees while mcm works: the teacher's sampling bar (`mcm generate`, on a
terminal unless --no-progress) and a training run's train.log in its output folder."""

import fcntl
import logging
import os
import struct
import subprocess
import sys
import termios
import threading

import pytest
import torch

from mcm.cli import main
from mcm.media import write_video
from mcm.models import load_teacher
from mcm.models.sampling import sample_teacher
from mcm.paths import resolve_teacher
from mcm.world.domains import render_sample

PROMPT = "a red circle moving left"


@pytest.fixture(scope="module")
def world():
    return load_teacher(resolve_teacher("world"))


@pytest.mark.parametrize("progress", [True, False])
def test_teacher_sampling_draws_a_bar_of_its_steps_only_when_asked(world, capfd, progress):
    sample_teacher(world, [PROMPT], 3, num_frames=4, output_type="latent", progress=progress)
    err = capfd.readouterr().err
    if progress:
        assert "teacher" in err and "3/3" in err
    else:
        assert err == ""


def on_a_terminal(monkeypatch, argv: list[str]) -> tuple[int, str]:
    """Run ``mcm ARGV`` here with stderr on a pseudo-terminal: (status, what it wrote there)."""
    master, replica = os.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 80 columns
    written: list[bytes] = []

    def read():  # until the terminal is closed (EIO), so a full buffer never blocks mcm
        try:
            while chunk := os.read(master, 4096):
                written.append(chunk)
        except OSError:
            pass

    reader = threading.Thread(target=read)
    reader.start()
    with open(replica, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        status = main(argv)
        monkeypatch.undo()
    reader.join(timeout=10)
    os.close(master)
    return status, b"".join(written).decode(errors="replace")


def test_generate_draws_the_teacher_bar_on_a_terminal_unless_no_progress(
    monkeypatch, tmp_path, capfd
):
    argv = ["generate", "--prompt", PROMPT, "--steps", "3", "--frames", "4"]
    status, terminal = on_a_terminal(monkeypatch, argv + ["--out", str(tmp_path / "a.mp4")])
    assert status == 0 and "teacher" in terminal and "3/3" in terminal

    status, terminal = on_a_terminal(
        monkeypatch, argv + ["--out", str(tmp_path / "b.mp4"), "--no-progress"]
    )
    assert status == 0 and "%|" not in terminal  # no bar at all, the loaders' neither

    assert main(argv + ["--out", str(tmp_path / "c.mp4")]) == 0  # stderr: not a terminal
    assert "%|" not in capfd.readouterr().err
    assert all((tmp_path / f"{name}.mp4").stat().st_size > 0 for name in "abc")


TRAIN_CONFIG = """\
model:
  teacher: {teacher}
  lora_rank: 4
  lora_alpha: 4
data:
  video:
    source: {clips}
    num_frames: 4
    resolution: 32
    num_workers: 0
discriminator:
  enabled: false
method:
  mixed_trajectories: false
train:
  max_steps: 1
  batch_size: 1
  log_every: 1
  checkpoint_every: 0
  tracker: none
  export: false
"""


@pytest.fixture
def train_config(tmp_path, tiny_dirs):
    clips = tmp_path / "clips"
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        video, caption, _ = render_sample("lowq_video", g, num_frames=4)
        write_video(clips / f"{i:03d}.mp4", video)
        (clips / f"{i:03d}.txt").write_text(caption)
    path = tmp_path / "train.yaml"
    path.write_text(TRAIN_CONFIG.format(teacher=tiny_dirs["modelscope"], clips=clips))
    return path


def test_mcm_train_writes_train_log_and_appends_on_resume(train_config, tmp_path):
    out = tmp_path / "run"
    mcm = logging.getLogger("mcm")
    assert main(["train", "--config", str(train_config), "--output-dir", str(out)]) == 0
    first = (out / "train.log").read_text()
    lines = first.splitlines()
    assert any(f"Training distil from step 0 to 1 in {out}" in line for line in lines)
    steps = [line for line in lines if " mcm.train INFO step " in line]
    assert len(steps) == 1 and "step 1/1: loss_mcd " in steps[0] and "lr_g " in steps[0]
    assert any("Saved " in line and "checkpoint-1" in line for line in lines)
    assert any("Trained distil to step 1" in line for line in lines)
    assert not any(isinstance(h, logging.FileHandler) for h in mcm.handlers)  # closed

    resume = ["--set", "train.max_steps=2", "--resume", "latest"]
    assert main(["train", "--config", str(train_config), "--output-dir", str(out), *resume]) == 0
    log = (out / "train.log").read_text()
    assert log.startswith(first)  # appended
    added = log[len(first) :]
    assert "Resumed from" in added and "step 2/2:" in added and "step 1/" not in added
    assert len(log.splitlines()) == len(set(log.splitlines()))  # no line written twice


# The demo's second training process (mcm.demo._train_lcm_process): no logging configured
# (logging's last resort prints warnings on stderr), stdout and stderr appended to the
# train.log that its trainer writes too.
LOG_INTO_OWN_STDERR = """
import logging, os, sys
from mcm.training.log_file import TrainLog
path = sys.argv[1]
with open(path, "a") as f:
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
print("a print", flush=True)
log = TrainLog(path)
logging.getLogger("mcm.train").warning("a warning")
logging.getLogger("mcm.train").info("a line")
print("another print", flush=True)
log.close()
logging.getLogger("mcm.train").warning("after the log")
"""


def without_time(line: str) -> str:
    """A log line without its date and time (FORMAT: "%(asctime)s %(name)s ..."); a print
    as it is."""
    return line.split(" ", 2)[2] if line[:4].isdigit() else line


def test_a_train_log_that_is_also_stderr_gets_each_line_once(tmp_path):
    path = tmp_path / "train.log"
    subprocess.run([sys.executable, "-c", LOG_INTO_OWN_STDERR, str(path)], check=True)
    lines = path.read_text().splitlines()
    assert [without_time(line) for line in lines] == [
        "a print",
        "mcm.train WARNING a warning",
        "mcm.train INFO a line",
        "another print",
        "after the log",  # the log closed: the last resort prints it on stderr again
    ]


def test_without_logging_configured_warnings_still_reach_stderr(tmp_path):
    path = tmp_path / "train.log"
    script = LOG_INTO_OWN_STDERR.replace(
        "os.dup2(f.fileno(), 1)\n    os.dup2(f.fileno(), 2)", "pass"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    assert result.stdout == "a print\nanother print\n"
    assert result.stderr == "a warning\nafter the log\n"
    assert [without_time(line) for line in path.read_text().splitlines()] == [
        "mcm.train WARNING a warning",
        "mcm.train INFO a line",
    ]
