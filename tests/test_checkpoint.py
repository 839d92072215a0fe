"""Durable checkpoints: atomic writes with a folder fsync, rotation that never loses a
complete file, stale temporaries removed, room checked, every RNG stream restored."""
from __future__ import annotations

import os
import random
import shutil
from collections import namedtuple

import numpy as np
import pytest
import torch

from sslzoo import checkpoint
from sslzoo.errors import ConfigError


def _payload(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "step": step}


def _steps_on_disk(folder):
    return [checkpoint.load(p)["step"] for p in checkpoint.step_checkpoints(folder)]


def test_keep_holds_exactly_the_k_most_recent_step_checkpoints(tmp_path):
    for step in (5, 10, 15, 20, 25):
        checkpoint.save_checkpoint(_payload(step), tmp_path, step=step, keep=2)
    assert [p.name for p in checkpoint.step_checkpoints(tmp_path)] == [
        "step-000020.pt", "step-000025.pt"]
    assert checkpoint.load(tmp_path / "last.pt")["step"] == 25
    checkpoint.save_checkpoint(_payload(26), tmp_path)          # an epoch-end save: last.pt only
    assert _steps_on_disk(tmp_path) == [20, 25]
    assert checkpoint.load(tmp_path / "last.pt")["step"] == 26


@pytest.mark.parametrize("fail_at", ["step-file rename", "last.pt rename", "deleting old"])
def test_a_kill_during_rotation_loses_no_complete_checkpoint(tmp_path, monkeypatch, fail_at):
    for step in (5, 10):
        checkpoint.save_checkpoint(_payload(step), tmp_path, step=step, keep=2)
    real_replace, real_unlink = os.replace, type(tmp_path).unlink
    renames = []

    def dying_replace(src, dst):
        renames.append(dst)
        if (fail_at == "step-file rename" and len(renames) == 1) or \
                (fail_at == "last.pt rename" and len(renames) == 2):
            raise KeyboardInterrupt   # stands for the process dying here
        real_replace(src, dst)

    def dying_unlink(self, missing_ok=False):
        if fail_at == "deleting old" and self.name.startswith("step-"):
            raise KeyboardInterrupt
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(checkpoint.os, "replace", dying_replace)
    monkeypatch.setattr(type(tmp_path), "unlink", dying_unlink)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(_payload(15), tmp_path, step=15, keep=2)
    monkeypatch.undo()
    on_disk = _steps_on_disk(tmp_path)
    assert {5, 10} <= set(on_disk)                         # nothing complete was lost
    last = checkpoint.load(tmp_path / "last.pt")["step"]
    assert last == (10 if fail_at != "deleting old" else 15)
    assert on_disk == ([5, 10] if fail_at == "step-file rename" else [5, 10, 15])


def test_the_folder_entry_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_replace, real_fsync_dir = os.replace, checkpoint.fsync_dir
    monkeypatch.setattr(checkpoint.os, "replace",
                        lambda a, b: (events.append("rename"), real_replace(a, b)))
    monkeypatch.setattr(checkpoint, "fsync_dir",
                        lambda d: (events.append(("fsync", str(d))), real_fsync_dir(d)))
    checkpoint.save_atomic(_payload(1), tmp_path / "last.pt")
    assert events == ["rename", ("fsync", str(tmp_path))]


def test_leftover_temporaries_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".step-000005.pt.x.tmp").write_bytes(b"")
    checkpoint.save_atomic(_payload(3), tmp_path / "last.pt")
    removed = checkpoint.remove_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".last.pt.abc123.tmp", ".step-000005.pt.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_an_output_folder_that_cannot_be_written_is_refused_naming_out(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"^--out .*a-file/run is not writable"):
        checkpoint.check_room(blocker / "run", 1000)


def test_an_output_folder_without_room_for_two_checkpoints_is_refused(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 9 << 20, 1 << 20))
    checkpoint.check_room(tmp_path, 400 << 10)                 # 2 x 0.4 MiB fit in 1 MiB
    with pytest.raises(ConfigError, match=r"1\.0 MiB free, but 2 checkpoints need about 1\.2 MiB"):
        checkpoint.check_room(tmp_path, 600 << 10)


def test_training_refuses_an_output_folder_without_room(tmp_path, monkeypatch):
    from sslzoo.build import resolve
    from sslzoo.engine import train

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, 1 << 30, 4096))
    spec = resolve({"method": "simclr", "data": "synthetic", "backbone": "test_efficientnet",
                    "image_size": 16, "batch_size": 16, "max_steps": 1, "device": "cpu",
                    "out": str(tmp_path / "run")}, {"proj_hidden_dim": 8, "proj_dim": 8})
    with pytest.raises(ConfigError, match="MiB free"):
        train(spec, quiet=True)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_rng_state_restores_torch_python_and_numpy_streams(tmp_path):
    state = checkpoint.rng_state()
    first = (torch.rand(3), random.random(), np.random.rand(3))
    checkpoint.save_atomic({"model": {}, "rng": state}, tmp_path / "c.pt")
    torch.manual_seed(99), random.seed(99), np.random.seed(99)
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "c.pt")["rng"])
    again = (torch.rand(3), random.random(), np.random.rand(3))
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert np.array_equal(first[2], again[2])
