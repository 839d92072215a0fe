"""Progress on a terminal and in logs, and TensorBoard scalars equal to metrics.jsonl."""
from __future__ import annotations

import io
import json
import fcntl
import os
import pty
import struct
import termios

import pytest

from sslzoo.build import resolve
from sslzoo.engine import TrainState, train
from sslzoo.progress import Progress, eta_seconds, format_duration, progress_line

METRICS = {"step": 5, "epoch": 0, "lr": 0.03, "loss": 1.5, "images_per_s": 512.0}


def test_eta_is_the_remaining_steps_at_the_pace_so_far():
    assert eta_seconds(step=30, first_step=10, total=110, elapsed=20.0) == 80.0
    assert eta_seconds(step=10, first_step=10, total=110, elapsed=0.0) is None
    assert [format_duration(s) for s in (0, 75, 3725, None)] == ["0:00", "1:15", "1:02:05", "?"]


def test_plain_line_shows_loss_lr_throughput_and_eta():
    line = progress_line(5, 20, METRICS, eta=75.0)
    assert line == "step 5/20 epoch 0 loss 1.5 lr 0.03 512 img/s eta 1:15"


def test_without_a_terminal_progress_prints_plain_lines_with_eta(tmp_path):
    stream = io.StringIO()
    progress = Progress(10, stream=stream)
    progress.start(0)
    progress.update(10, {**METRICS, "step": 10})
    progress.close(TrainState(run_dir=tmp_path, step=10))
    first, last = stream.getvalue().splitlines()
    assert first.startswith("step 10/10 ") and first.endswith("eta 0:00")
    assert last.startswith("finished at step 10")


def test_on_a_terminal_progress_draws_a_bar_with_loss_lr_throughput_and_eta(tmp_path):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # 160 columns
    with os.fdopen(follower, "w") as terminal:
        progress = Progress(10, stream=terminal)
        assert progress.tty
        progress.start(0)
        for step in range(1, 6):
            progress.update(step, {**METRICS, "step": step})
        progress.close(TrainState(run_dir=tmp_path, step=5))
        terminal.flush()
        text = _read_all(leader)
    os.close(leader)
    assert "ETA" in text and "5/10" in text and "50%" in text
    assert "loss 1.5 lr 0.03 512 img/s" in text


def _read_all(fd: int) -> str:
    import select

    chunks = []
    while select.select([fd], [], [], 0.5)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode()


def test_tensorboard_logger_writes_the_scalars_of_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(resolve({"method": "simclr", "data": "synthetic", "backbone": "small_resnet10",
                   "image_size": 16, "batch_size": 8, "max_steps": 3, "log_every": 1,
                   "device": "cpu", "logger": "tensorboard", "out": str(out)},
                  {"proj_hidden_dim": 16, "proj_dim": 8}), quiet=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {k for row in rows for k in row if k != "step"}
    for tag in tags:
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        expected = [(r["step"], r[tag]) for r in rows if tag in r]
        assert [s for s, _ in logged] == [s for s, _ in expected]
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6), tag
