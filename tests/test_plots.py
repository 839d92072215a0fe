"""``sslzoo plot``: curves from metrics.jsonl and a 2-D map of frozen features."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sslzoo.cli import cli
from sslzoo.errors import CheckpointError, ConfigError, DataError
from sslzoo.plots import curves, plot_curves, project, read_metrics

TINY = ["--data", "synthetic", "--backbone", "small_resnet10", "--image-size", "16",
        "--batch-size", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots") / "run"
    result = CliRunner().invoke(cli, ["train", "simclr", *TINY, "--max-steps", "3",
                                      "--log-every", "1", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def write_rows(path, lines):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_metrics_keep_the_last_row_of_a_step_and_skip_a_torn_line(tmp_path):
    run = write_rows(tmp_path, [
        json.dumps({"step": 1, "epoch": 0, "lr": 0.1, "loss": 5.0, "images_per_s": 9.0}),
        json.dumps({"step": 2, "epoch": 0, "lr": 0.1, "loss": 4.0, "images_per_s": 9.0}),
        # resumed from the step-1 checkpoint: step 2 logged again
        json.dumps({"step": 2, "epoch": 0, "lr": 0.1, "loss": 3.5, "images_per_s": 9.0}),
        json.dumps({"step": 2, "epoch": 1, "knn_top1": 0.75}),
        json.dumps({"step": 3, "epoch": 1, "lr": 0.05, "loss": float("nan")}),
        '{"step": 4, "lo',
    ])
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 2, 3]
    series = curves(rows)
    assert series["loss"] == ([1, 2], [5.0, 3.5])          # NaN dropped, last row of step 2
    assert series["knn_top1"] == ([2], [0.75])
    assert series["lr"] == ([1, 2, 3], [0.1, 0.1, 0.05])
    assert "images_per_s" not in series and "epoch" not in series


def test_pca_map_separates_two_clusters_and_tsne_gives_two_columns():
    g = torch.Generator().manual_seed(0)
    centre = torch.zeros(16)
    centre[0] = 1.0
    a = centre + 0.05 * torch.randn(20, 16, generator=g)
    b = -centre + 0.05 * torch.randn(20, 16, generator=g)
    xy = project(torch.cat([a, b]))
    first = xy[:, 0]
    assert xy.shape == (40, 2)
    # the first component splits the clusters (its sign is arbitrary)
    assert (first[:20] * first[20:].mean() < 0).all() and (first[20:] * first[:20].mean() < 0).all()
    assert project(torch.cat([a, b]), "tsne").shape == (40, 2)
    with pytest.raises(ConfigError, match="pca or tsne"):
        project(a, "umap")


def test_plot_command_writes_curves_and_embedding_pngs(run_dir, tmp_path):
    result = CliRunner().invoke(cli, ["plot", str(run_dir), "--out", str(tmp_path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = result.output.split()
    assert written == [str(tmp_path / "curves.png"), str(tmp_path / "embedding.png")]
    for path in written:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
    result = CliRunner().invoke(cli, ["plot", str(run_dir), "--out", str(tmp_path / "c"),
                                      "--embedding", "none"])
    assert result.exit_code == 0 and result.output.split() == [str(tmp_path / "c" / "curves.png")]


def test_plot_errors_are_actionable(run_dir, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="metrics.jsonl"):
        read_metrics(tmp_path)
    loose = tmp_path / "copied.pt"
    loose.write_bytes((run_dir / "checkpoints" / "last.pt").read_bytes())
    result = CliRunner().invoke(cli, ["plot", str(loose), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "run directory" in result.output
    empty = write_rows(tmp_path / "empty", [json.dumps({"step": 1, "epoch": 0, "lr": 0.1})])
    with pytest.raises(DataError, match="no metrics"):
        plot_curves(empty, tmp_path / "x.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # as if not installed
    result = CliRunner().invoke(cli, ["plot", str(run_dir), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "pip install 'sslzoo[plot]'" in result.output
