"""The GPU benchmark script runs end to end in its dry mode (tiny sizes, CPU)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
