"""The CLI contract: names, flags, JSON shapes and exit statuses."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sslzoo.cli import cli

TINY = ["--data", "synthetic", "--backbone", "small_resnet10", "--image-size", "16",
        "--batch-size", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(cli, list(args), catch_exceptions=False)


def test_list_json_has_kind_name_plugin_version_summary(runner):
    result = invoke(runner, "list", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    simclr = next(r for r in rows if r["name"] == "simclr")
    assert simclr["kind"] == "method" and simclr["plugin"] == "sslzoo" and simclr["version"]
    assert "contrastive" in simclr["summary"].lower() or simclr["summary"]
    assert {r["kind"] for r in rows} >= {"method", "backbone", "augment", "dataset"}


def test_list_filters_by_kind_and_pattern(runner):
    rows = json.loads(invoke(runner, "list", "--kind", "backbones", "small_*", "--json").output)
    assert rows and all(r["kind"] == "backbone" and r["name"].startswith("small_") for r in rows)
    timm_rows = json.loads(invoke(runner, "list", "timm/resnet1*", "--json").output)
    assert any(r["name"] == "resnet18" for r in timm_rows)


def test_info_documents_every_hyper_parameter_and_augment_parameter(runner):
    result = invoke(runner, "info", "simclr", "--json")
    d = json.loads(result.output)
    assert "Chen et al." in d["paper"]
    fields = {f["name"]: f for f in d["config"]}
    assert fields["temperature"]["default"] == 0.1 and fields["temperature"]["help"]
    assert all(f["help"] for f in d["config"]), "every field needs help text"
    aug = {f["name"] for f in d["augment_config"]}
    assert {"crop_scale", "grayscale_prob", "blur_prob"} <= aug
    text = invoke(runner, "info", "simclr").output
    assert "aug.grayscale_prob" in text and "temperature = 0.1" in text


def test_unknown_method_exits_2_with_a_suggestion_and_no_traceback(runner):
    result = runner.invoke(cli, ["train", "simclrr", *TINY])
    assert result.exit_code == 2
    assert "did you mean 'simclr'" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("sets, message", [
    (["--set", "temprature=0.1"], "valid keys"),
    (["--set", "temperature=-1"], "temperature must be > 0"),
    (["--set", "temperature=hot"], "temperature expects float"),
    (["--set", "aug.crop_scale=0.5"], "crop_scale"),
    (["--set", "noequals"], "KEY=VALUE"),
])
def test_invalid_hyper_parameters_exit_2_naming_the_fix(runner, sets, message, tmp_path):
    result = runner.invoke(cli, ["train", "simclr", *TINY, "--out", str(tmp_path / "r"), *sets])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_unknown_data_and_backbone_are_clear_errors(runner, tmp_path):
    result = runner.invoke(cli, ["train", "simclr", "--data", "digitz", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "digits" in result.output
    result = runner.invoke(cli, ["train", "simclr", "--backbone", "small_resnet", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "small_resnet" in result.output


def test_train_eval_and_config_file_round_trip(runner, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[train]\nmax_steps = 2\n[method]\ntemperature = 0.2\n'
                      '[augment]\ngrayscale_prob = 0.0\n')
    out = tmp_path / "run"
    result = invoke(runner, "train", "simclr", *TINY, "--config", str(config), "--out", str(out),
                    "--set", "proj_dim=8")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["method"]["temperature"] == 0.2 and saved["method"]["proj_dim"] == 8
    assert saved["augment"]["grayscale_prob"] == 0.0 and saved["train"]["max_steps"] == 2
    result = invoke(runner, "eval", str(out), "--json")
    d = json.loads(result.output)
    assert 0 <= d["knn_top1"] <= 1 and 0 <= d["linear_top1"] <= 1
    assert json.loads((out / "eval.json").read_text())["knn_top1"] == d["knn_top1"]
    assert "kNN top-1" in invoke(runner, "eval", str(out), "--protocol", "knn").output


def test_resume_refuses_changed_hyper_parameters(runner, tmp_path):
    out = tmp_path / "run"
    invoke(runner, "train", "simclr", *TINY, "--max-steps", "1", "--out", str(out))
    result = runner.invoke(cli, ["train", "simclr", "--out", str(out), "--resume", "--set", "temperature=0.5"])
    assert result.exit_code == 2 and "saved configuration" in result.output
    result = runner.invoke(cli, ["train", "simclr", "--out", str(out), "--resume", "--max-steps", "2"])
    assert result.exit_code == 0, result.output


def test_eval_of_a_missing_or_corrupt_run_exits_2(runner, tmp_path):
    result = runner.invoke(cli, ["eval", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no run directory" in result.output
    (tmp_path / "bad" / "checkpoints").mkdir(parents=True)
    (tmp_path / "bad" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    result = runner.invoke(cli, ["eval", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "cannot read checkpoint" in result.output


def test_export_writes_backbone_weights_loadable_by_timm(runner, tmp_path):
    import timm
    import torch

    out = tmp_path / "run"
    invoke(runner, "train", "simclr", "--data", "synthetic", "--backbone", "resnet10t",
           "--image-size", "32", "--batch-size", "16", "--max-steps", "1", "--out", str(out))
    weights = tmp_path / "encoder.pth"
    assert invoke(runner, "export", str(out), "--out", str(weights)).exit_code == 0
    model = timm.create_model("resnet10t", num_classes=0)
    model.load_state_dict(torch.load(weights, weights_only=True))


@pytest.mark.slow
def test_installed_command_runs_end_to_end(tmp_path):
    out = tmp_path / "run"
    train = subprocess.run([sys.executable, "-m", "sslzoo", "train", "simclr", *TINY,
                            "--max-steps", "2", "--out", str(out)], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    assert train.stdout.strip() == str(out)
    script = Path(sys.executable).with_name("sslzoo")   # the installed console script
    ev = subprocess.run([str(script), "eval", str(out), "--json", "--protocol", "knn"],
                        capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    assert 0 <= json.loads(ev.stdout)["knn_top1"] <= 1


def test_resume_accepts_the_same_command_again_and_names_each_real_change(runner, tmp_path):
    out = tmp_path / "run"
    same = ["train", "simclr", *TINY, "--out", str(out), "--set", "proj_dim=8",
            "--set", "aug.crop_scale=0.08,1"]
    assert invoke(runner, *same, "--max-steps", "1").exit_code == 0
    # the same options, spelt differently where values parse equal, plus what may change
    again = runner.invoke(cli, [*same[:-2], "--set", "aug.crop_scale=(0.08, 1.0)", "--set",
                                "temperature=0.10", "--resume", "--max-steps", "2"])
    assert again.exit_code == 0, again.output
    changed = runner.invoke(cli, ["train", "simclr", *TINY[:-4], "--batch-size", "16",
                                  "--device", "cpu", "--out", str(out), "--resume",
                                  "--set", "temperature=0.5", "--set", "aug.hflip_prob=0"])
    assert changed.exit_code == 2
    assert "--batch-size 32 -> 16" in changed.output
    assert "temperature 0.1 -> 0.5" in changed.output and "aug.hflip_prob 0.5 -> 0.0" in changed.output
    assert "--data" not in changed.output.split("Only")[0]


def test_unknown_set_key_suggests_the_closest_key(runner, tmp_path):
    result = runner.invoke(cli, ["train", "simclr", *TINY, "--out", str(tmp_path / "r"),
                                 "--set", "temprature=0.1"])
    assert result.exit_code == 2 and "did you mean 'temperature'" in result.output
    result = runner.invoke(cli, ["train", "simclr", *TINY, "--out", str(tmp_path / "r"),
                                 "--set", "aug.vflip=0.5"])
    assert result.exit_code == 2 and "did you mean 'vflip_prob' (--set aug.vflip_prob" in result.output


def test_print_config_prints_a_complete_toml_that_config_accepts(runner, tmp_path):
    from sslzoo.build import read_toml, resolve

    result = invoke(runner, "train", "moco", "--print-config", "--set", "version=2",
                    "--set", "aug.vflip_prob=0.5")
    assert result.exit_code == 0, result.output
    path = tmp_path / "moco.toml"
    path.write_text(result.output)
    toml = read_toml(path)
    assert toml["method"]["version"] == 2 and toml["augment"]["vflip_prob"] == 0.5
    assert toml["train"]["augment"] == "moco-v2" and "max_steps" not in toml["train"]  # None: its default
    assert set(toml["method"]) == {f.name for f in __import__("dataclasses").fields(
        resolve({"method": "moco"}).method_config)}
    expected = resolve({"method": "moco"}, {"version": 2}, {"vflip_prob": 0.5})
    assert resolve({**toml["train"], "method": "moco"}, toml["method"], toml["augment"]) == expected


def test_train_method_argument_completes_registered_names():
    from sslzoo.cli import _complete_method

    assert _complete_method(None, None, "si") == ["simclr"]
    assert {"moco", "rotation"} <= set(_complete_method(None, None, ""))


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _run_until_checkpoint_then_sigkill(cmd: list[str], out: Path, env: dict) -> None:
    import os
    import signal
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    ckpt = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 600
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in [*_descendants(proc.pid), proc.pid]:   # torchrun's workers have their own sessions
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)            # no chance to checkpoint or clean up
    proc.wait()
    assert proc.returncode != 0, "the run finished before it could be killed"


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_sigkilled_run_finishes_when_the_same_command_is_repeated_with_resume(tmp_path, nproc):
    import os

    from sslzoo import checkpoint

    out = tmp_path / "run"
    script = str(Path(sys.executable).with_name("sslzoo"))   # the installed console script
    cmd = [script, "train", "simclr", "--data", "synthetic", "--backbone", "small_resnet10",
           "--image-size", "16", "--batch-size", "8", "--device", "cpu", "--max-steps", "60",
           "--checkpoint-every", "5", "--log-every", "5", "--out", str(out),
           *(["--nproc", "2"] if nproc > 1 else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    _run_until_checkpoint_then_sigkill(cmd, out, env)
    assert checkpoint.load(out / "checkpoints" / "last.pt")["step"] < 60
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert checkpoint.load(out / "checkpoints" / "last.pt")["step"] == 60
    at = cmd.index("--batch-size") + 1
    changed = subprocess.run([*cmd[:at], "16", *cmd[at + 1:], "--resume"], capture_output=True,
                             text=True, env=env)
    assert changed.returncode == 2 and "--batch-size 8 -> 16" in changed.stderr + changed.stdout


def test_list_summaries_are_whole_sentences(runner):
    rows = json.loads(invoke(runner, "list", "--json").output)
    for r in rows:
        if r["kind"] in ("method", "augment") and r["plugin"] == "sslzoo":
            s = r["summary"]
            assert s.endswith("."), s
            assert s.count("(") == s.count(")") and s.count('"') % 2 == 0, s


def test_summary_of_a_wrapped_first_paragraph_is_whole():
    from sslzoo.plugins import summary_of

    def documented():
        """A summary that wraps
        onto a second line.

        Details.
        """
    assert summary_of(documented) == "A summary that wraps onto a second line."
