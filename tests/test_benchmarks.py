"""The GPU benchmark script runs end to end in its dry mode (tiny sizes, CPU)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_dry_mode_prints_every_table_on_the_cpu():
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry"],
                         env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    methods = {row.split("|")[1].strip() for row in rows}
    assert "simclr" in methods
    simclr = next(row.split("|") for row in rows if row.split("|")[1].strip() == "simclr")
    full, model_only, ratio = (float(v) for v in simclr[2:5])
    assert full > 0 and model_only > 0 and ratio > 0
    assert any("epochs/min" in row for row in rows)
    # the augmentation table comes last: fused and kornia rates and their ratio per pipeline
    header = next(i for i, row in enumerate(rows) if "fused / kornia" in row)
    augments = {row.split("|")[1].strip(): row.split("|") for row in rows[header + 2:]}
    assert {"simclr", "moco-v2", "crop-flip"} <= set(augments)
    fused_rate, kornia_rate, ratio = (float(v.replace(",", "")) for v in augments["simclr"][2:5])
    assert fused_rate > 0 and kornia_rate > 0 and ratio == pytest.approx(fused_rate / kornia_rate,
                                                                          rel=0.02, abs=0.01)


def test_the_side_by_side_benchmark_writes_a_folder_sslzoo_reads(tmp_path):
    """versus_lightly.py's default data (the part that runs without lightly installed)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from versus_lightly import photo_folder
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from sslzoo.data import load_folder

    folder, n = photo_folder(tmp_path / "photos", per_photo=16)
    assert n == 32
    train, test = (load_folder(folder, split, 16) for split in ("train", "test"))
    assert len(train) + len(test) == 32
    assert len(train.classes) == 8                     # 2 photos x 4 quadrants
