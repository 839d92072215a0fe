"""``sslzoo compare``: z against random init, summaries, the report, resume, the CLI."""
from __future__ import annotations

import json
import statistics

import pytest
from click.testing import CliRunner

from sslzoo import compare
from sslzoo.cli import cli
from sslzoo.errors import ConfigError

ARGS = ["--data", "synthetic", "--methods", "rotation,simclr", "--backbone", "timm/test_resnet",
        "--image-size", "16", "--budget-steps", "2", "--batch-size", "8", "--seeds", "0,1"]


def test_z_is_the_gain_in_random_init_standard_deviations():
    trained, random = [0.80, 0.84, 0.82], [0.70, 0.72, 0.74]
    expected = (statistics.fmean(trained) - 0.72) / statistics.stdev(random)
    assert compare.z_score(trained, random) == pytest.approx(expected)
    assert compare.z_score(trained, random) == pytest.approx(5.0)


def test_z_is_undefined_without_a_random_init_spread():
    assert compare.z_score([0.9], [0.5]) is None
    assert compare.z_score([0.9, 0.8], [0.5, 0.5]) is None


def test_the_table_names_the_augmentation_each_run_recorded():
    run = {"autocast": "off", "augment_backend": "fused"}
    report = {"settings": {"data": "d", "backbone": "b", "image_size": 16, "budget_steps": 2,
                           "batch_size": 8, "seeds": [0, 1], "features": "final"},
              "runs": [run, {**run, "augment_backend": "kornia"}], "summary": []}
    assert ", fp32, fused and kornia augmentation;" in compare.format_table(report)
    older = {**report, "runs": [{"autocast": "off"}]}  # made before the field existed
    assert "augmentation" not in compare.format_table(older)


def test_method_sets_need_a_method_of_the_comparison():
    assert compare.parse_method_sets({"moco.queue_size": "1024", "moco.aug.crop": "0.2"},
                                     ["moco"]) == {"moco": {"queue_size": "1024", "aug.crop": "0.2"}}
    with pytest.raises(ConfigError, match="METHOD.KEY=VALUE"):
        compare.parse_method_sets({"queue_size": "1024"}, ["moco"])


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    result = CliRunner().invoke(cli, ["compare", *ARGS, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_compare_writes_json_table_and_chart_for_every_method_and_seed(compared):
    out, output = compared
    report = json.loads((out / "compare.json").read_text())
    assert report["complete"] and [r["method"] for r in report["summary"]] == ["rotation", "simclr"]
    assert sorted((r["method"], r["seed"]) for r in report["runs"]) == [
        ("rotation", 0), ("rotation", 1), ("simclr", 0), ("simclr", 1)]
    for run in report["runs"]:
        assert run["steps"] == 2 and run["features"] == "final" and run["knn_temperature"] == 0.07
        assert 0 <= run["knn_top1"] <= 1 and 0 <= run["random_linear_top1"] <= 1
        assert run["augment_backend"] == "fused"  # the default, recorded per run
    row = report["summary"][0]
    knn = [r["knn_top1"] for r in report["runs"] if r["method"] == "rotation"]
    random = [r["random_knn_top1"] for r in report["runs"] if r["method"] == "rotation"]
    assert row["knn_mean"] == pytest.approx(statistics.fmean(knn))
    assert row["knn_z"] == compare.z_score(knn, random)
    table = (out / "compare.md").read_text()
    assert table in output and "| rotation |" in table and "**" not in table
    assert ", fused augmentation;" in table.splitlines()[0]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_init_of_the_same_backbone_and_seed_is_evaluated_once(compared):
    out, _ = compared
    # rotation and simclr share preprocessing and backbone: one baseline per seed
    assert len(list((out / "random-init").glob("*.json"))) == 2
    report = json.loads((out / "compare.json").read_text())
    by_seed = {}
    for r in report["runs"]:
        by_seed.setdefault(r["seed"], set()).add(r["random_knn_top1"])
    assert all(len(v) == 1 for v in by_seed.values())


def test_rerunning_the_same_command_reuses_finished_runs(compared, monkeypatch):
    out, _ = compared
    before = json.loads((out / "compare.json").read_text())

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(compare, "train_and_evaluate", no_training)
    result = CliRunner().invoke(cli, ["compare", *ARGS, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.count("reusing") == 4
    assert json.loads((out / "compare.json").read_text())["runs"] == before["runs"]


def test_a_run_made_with_other_settings_is_an_error_not_a_mix(compared):
    out, _ = compared
    args = [a if a != "2" else "3" for a in ARGS]  # --budget-steps 3
    result = CliRunner().invoke(cli, ["compare", *args, "--out", str(out)])
    assert result.exit_code == 2 and "other settings" in result.output


def test_unknown_method_fails_before_any_training(tmp_path):
    result = CliRunner().invoke(cli, ["compare", "--methods", "simclr,mocco", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "moco" in result.output
    assert not (tmp_path / "c").exists()
