"""The ``sslzoo`` command line: parses, calls the library, formats.

Exit status: 0 on success, 2 on bad usage or input (one line, no traceback), 1 on an
unexpected failure, 130 when training was interrupted (a checkpoint was written).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from sslzoo import config as cfg
from sslzoo.errors import SslzooError

KINDS = ("methods", "backbones", "augments", "datasets")


class Group(click.Group):
    """Turns library errors into one line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SslzooError as exc:
            raise UserError(str(exc)) from None


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sslzoo")
def cli() -> None:
    """Self-supervised pretext and contrastive methods for images."""


def _plugins() -> Any:
    from sslzoo.plugins import default_plugins

    return default_plugins()


# -- list --------------------------------------------------------------------------------
@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--kind", type=click.Choice(KINDS), help="only this kind of name")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
def list_(pattern: str | None, kind: str | None, as_json: bool) -> None:
    """Every method, backbone, augment and data set, with its plugin.

    PATTERN filters names with shell wildcards ('resnet*'); 'timm/PATTERN' lists the
    timm models that also work as backbones.
    """
    from sslzoo.listing import list_rows

    rows = list_rows(_plugins(), pattern=pattern, kind=kind)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(format_list(rows))


def format_list(rows: list[dict[str, Any]]) -> str:
    lines, current = [], None
    width = max((len(r["name"]) for r in rows), default=10) + 2
    for r in rows:
        if r["kind"] != current:
            current = r["kind"]
            lines.append(("\n" if lines else "") + f"{current}s:")
        if "error" in r:
            lines.append(f"  {r['name']:<{width}}BROKEN (plugin: {r['plugin']} {r['version']}): {r['error']}")
        else:
            lines.append(f"  {r['name']:<{width}}{r['summary']}  (plugin: {r['plugin']})")
    return "\n".join(lines) if lines else "nothing matches"


# -- info --------------------------------------------------------------------------------
@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def info(name: str, as_json: bool) -> None:
    """Summary, paper and every hyper-parameter of a method (or augment, backbone, data set)."""
    from sslzoo.listing import describe_name

    d = describe_name(_plugins(), name)
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    click.echo(f"{d['name']} ({d['kind']}, plugin: {d['plugin']} {d['version']})")
    if d.get("summary"):
        click.echo(d["summary"])
    if d.get("paper"):
        click.echo(f"paper: {d['paper']}")
    for title, key, prefix in (("hyper-parameters", "config", ""),
                               (f"augmentation ({d.get('augment')})", "augment_config", "aug.")):
        fields = d.get(key)
        if not fields:
            continue
        click.echo(f"\n{title} (--set {prefix}KEY=VALUE):")
        for f in fields:
            click.echo(f"  {prefix}{f['name']} = {cfg.format_value(f['default'])}  [{f['type']}]")
            if f["help"]:
                click.echo(f"      {f['help']}")
    recipes = d.get("recipes") or []
    if recipes:
        click.echo("\nrecipes (--recipe NAME):")
    for r in recipes:
        click.echo(f"  {r['name']}: {r['summary']}")
        click.echo(f"      source: {r['source']}")
        for c in r["changes"]:
            click.echo(f"      {c['key']}: {c['default']} -> {c['value']}")


# -- train -------------------------------------------------------------------------------
def _complete_method(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of METHOD: the registered method names."""
    return [n for n in _plugins().methods.names() if n.startswith(incomplete)]


@cli.command(context_settings={"show_default": True})
@click.argument("method", shell_complete=_complete_method)
@click.option("--data", help="data set name or image folder [default: digits]")
@click.option("--data-root", help="where data sets are stored / downloaded")
@click.option("--download", is_flag=True, default=None, help="download the data set if missing")
@click.option("--backbone", help="backbone: registered name or any timm model [default: small_resnet18]")
@click.option("--pretrained", is_flag=True, default=None, help="start from pretrained backbone weights")
@click.option("--image-size", type=int, help="square image size [default: 32]")
@click.option("--epochs", type=int, help="training epochs [default: 100]")
@click.option("--max-steps", type=int, help="stop after this many steps")
@click.option("--batch-size", type=int, help="images per step and process [default: 256]")
@click.option("--lr", type=float, help="peak learning rate [default: method's rule]")
@click.option("--clip-grad", type=float, help="clip the gradient norm (0: off)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="[default: auto]")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), help="[default: auto]")
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the method")
@click.option("--compile-mode", type=click.Choice(["default", "reduce-overhead", "max-autotune"]),
              help="torch.compile mode [default: default]")
@click.option("--channels-last", type=click.Choice(["auto", "on", "off"]),
              help="channels_last images and model [default: auto = on]")
@click.option("--cpu-tuning/--no-cpu-tuning", default=None,
              help="on the CPU, keep freed memory for reuse (glibc) [default: on]")
@click.option("--sync-bn/--no-sync-bn", default=None,
              help="SyncBatchNorm under torchrun [default: the method's; SimCLR: on]")
@click.option("--augment", help="augment pipeline [default: the method's]")
@click.option("--recipe", help="a named recipe of the method (`sslzoo info METHOD` lists them)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="a method hyper-parameter, or aug.KEY=VALUE for the augment (repeatable)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file with [train], [method] and [augment] tables")
@click.option("--seed", type=int, help="random seed [default: 0]")
@click.option("--out", help="run directory [default: runs/<method>-<timestamp>]")
@click.option("--resume", is_flag=True, help="continue the run in --out (default: the latest run of METHOD)")
@click.option("--eval-every", type=int, help="kNN monitor every N epochs (0: off)")
@click.option("--checkpoint-every", type=int, help="also checkpoint every N steps")
@click.option("--keep", type=int, help="keep the K most recent step checkpoints (0: last.pt only)")
@click.option("--skip-nonfinite", type=int, help="skip up to N steps with a non-finite loss (0: stop)")
@click.option("--strict-data", is_flag=True, default=None,
              help="stop at the first unreadable image file instead of skipping it")
@click.option("--log-every", type=int, help="write metrics every N steps [default: 10]")
@click.option("--num-workers", type=int, help="DataLoader workers for streamed folders")
@click.option("--logger", type=click.Choice(["jsonl", "tensorboard"]),
              help="also write TensorBoard event files (metrics.jsonl is always written) "
                   "[default: jsonl]")
@click.option("--decoded-cache/--no-decoded-cache", default=None,
              help="decode folders too large for memory once into a memory-mapped cache [default: on]")
@click.option("--nproc", type=int, help="launch N processes on this machine through torchrun")
@click.option("--print-config", is_flag=True,
              help="print the resolved configuration as TOML for --config, and exit")
def train(method: str, sets: tuple[str, ...], config_file: str | None, resume: bool,
          compile_: bool | None, nproc: int | None, print_config: bool, **options: Any) -> None:
    """Pretrain METHOD's encoder (`sslzoo list --kind methods` shows them)."""
    from sslzoo.build import read_toml, resolve, split_overrides
    from sslzoo.engine import Trainer

    options["compile"] = compile_
    given = {k: v for k, v in options.items() if v is not None}
    toml = read_toml(config_file) if config_file else {}
    method_sets, aug_sets = split_overrides(cfg.parse_assignments(sets))
    if resume:
        spec = _resume_spec(method, {**toml.get("train", {}), **given},
                            {**toml.get("method", {}), **method_sets},
                            {**toml.get("augment", {}), **aug_sets})
    else:
        train_values = {**toml.get("train", {}), **given, "method": method}
        spec = resolve(train_values, {**toml.get("method", {}), **method_sets},
                       {**toml.get("augment", {}), **aug_sets}, _plugins())
    if print_config:
        click.echo(spec_toml(spec), nl=False)
        return
    if nproc and nproc > 1:   # the options were checked once, here, before any process starts
        from sslzoo.launch import launch

        sys.exit(launch(nproc, sys.argv[1:]))
    trainer = Trainer(spec, resume=resume, plugins=_plugins())
    run_dir = trainer.fit()
    from sslzoo.distributed import is_main

    if trainer.state.interrupted:
        if is_main():
            click.echo(f"interrupted at step {trainer.state.step}; checkpoint saved. Resume with:\n"
                       f"  sslzoo train {method} --out {run_dir} --resume", err=True)
        sys.exit(130)
    if is_main():
        click.echo(str(run_dir))


RESUMABLE = ("epochs", "max_steps", "device", "precision", "num_workers", "eval_every",
             "log_every", "checkpoint_every", "logger", "keep", "skip_nonfinite")


def spec_toml(spec: Any) -> str:
    """A resolved run as the TOML that ``--config`` reads (keys left at ``None`` omitted)."""
    d = spec.to_dict()
    tables = {"train": {k: v for k, v in d["train"].items() if k != "method"},
              "method": {k: v for k, v in d["method"].items() if k != "name"},
              "augment": {k: v for k, v in d["augment"].items() if k != "name"}}
    header = f"# sslzoo train {spec.method_cls.name} --config FILE\n"
    return header + cfg.to_toml(tables)


def _resume_spec(method: str, given: dict[str, Any], method_sets: dict[str, Any],
                 aug_sets: dict[str, Any]) -> Any:
    """The saved run's spec with the options that may change on resume; any other given
    option must equal its saved value (compared after parsing)."""
    from sslzoo.build import from_dict, resolve
    from sslzoo.errors import CheckpointError, ConfigError

    if given.get("out"):
        run_dir = Path(given["out"])
    else:
        runs = sorted(Path("runs").glob(f"{method}-*"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise CheckpointError(f"--resume: no runs/{method}-* directory; give --out RUN_DIR")
        run_dir = runs[-1]
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"--resume: {config_path} does not exist; is {run_dir} a run directory?")
    saved = json.loads(config_path.read_text())
    if saved["method"]["name"] != method:
        raise CheckpointError(f"--resume: {run_dir} is a {saved['method']['name']} run, not {method}")
    before = from_dict(saved, _plugins())
    changes = []
    if given.get("augment", before.augment_cls.name) != before.augment_cls.name:
        changes.append(f"--augment {before.augment_cls.name} -> {given['augment']}")
    else:
        after = resolve({**saved["train"], **given, "method": method, "out": str(run_dir)},
                        {**saved["method"], **method_sets}, {**saved["augment"], **aug_sets},
                        _plugins())
        changes = _changes(before, after)
    if changes:
        raise ConfigError("--resume continues a run with its saved configuration, but "
                          + "; ".join(changes) + ". Only "
                          + ", ".join("--" + k.replace("_", "-") for k in RESUMABLE)
                          + " may change; to change the rest, start a new run with another --out")
    return after


def _changes(before: Any, after: Any) -> list[str]:
    """``--batch-size 8 -> 16``, ``temperature 0.5 -> 0.1``: every non-resumable
    difference between two specs."""
    import dataclasses

    out = []
    for a, b, flag in ((before.train, after.train, lambda k: "--" + k.replace("_", "-")),
                       (before.method_config, after.method_config, lambda k: k),
                       (before.augment_config, after.augment_config, lambda k: "aug." + k)):
        for f in dataclasses.fields(a):
            if a is before.train and f.name in RESUMABLE + ("out",):
                continue
            va, vb = getattr(a, f.name), getattr(b, f.name)
            if va != vb:
                out.append(f"{flag(f.name)} {cfg.format_value(va)} -> {cfg.format_value(vb)}")
    return out


# -- eval --------------------------------------------------------------------------------
@cli.command("eval")
@click.argument("path", type=click.Path())
@click.option("--data", help="data set to evaluate on [default: the run's]")
@click.option("--data-root", help="where data sets are stored")
@click.option("--download", is_flag=True, help="download the data set if missing")
@click.option("--protocol", type=click.Choice(["knn", "linear", "all"]), default="all", show_default=True)
@click.option("--features", default="final", show_default=True,
              help="final (pooled last map), a backbone stage (stage2, ...) or embedding "
                   "(the method's own, kNN with its temperature)")
@click.option("--knn-k", type=click.IntRange(1, None), default=200, show_default=True,
              help="neighbours of the kNN vote")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--random-init", is_flag=True, help="evaluate the same backbone at random initialisation")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def eval_(path: str, data: str | None, data_root: str | None, download: bool, protocol: str,
          features: str, knn_k: int, device: str, random_init: bool, as_json: bool) -> None:
    """kNN and linear probe on frozen features of a run directory or checkpoint."""
    from sslzoo.evaluation import evaluate

    result = evaluate(path, data=data, protocol=protocol, device=device, random_init=random_init,
                      data_root=data_root, download=download, plugins=_plugins(),
                      features=features, k=knn_k)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['method']} ({result['backbone']}, step {result['step']}) on {result['data']}: "
               f"{result['num_train']} train / {result['num_test']} test images, "
               f"features {result['features']} ({result['feature_dim']}-d)")
    knn = f"kNN top-1 (k={result.get('knn_k')}, t={result.get('knn_temperature')})"
    for key, label in (("knn_top1", knn), ("linear_top1", "offline linear probe top-1")):
        if key in result:
            click.echo(f"  {label:<32}{100 * result[key]:6.2f}%")


# -- compare -----------------------------------------------------------------------------
def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected integers separated by commas, got {value!r}") from None


@cli.command()
@click.option("--data", default="digits", show_default=True, help="labelled data set name or image folder")
@click.option("--methods", required=True, help="methods separated by commas (simclr,moco,rotation)")
@click.option("--backbone", default="small_resnet18", show_default=True, help="backbone for every method")
@click.option("--image-size", type=click.IntRange(8, None), default=32, show_default=True)
@click.option("--budget-steps", type=click.IntRange(1, None), default=100, show_default=True,
              help="optimiser steps of every run")
@click.option("--batch-size", type=click.IntRange(1, None), default=64, show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True, callback=_int_list,
              help="seeds separated by commas; each also seeds the random-init baseline")
@click.option("--features", default="final", show_default=True,
              help="features evaluated (as sslzoo eval --features)")
@click.option("--set", "sets", multiple=True, metavar="METHOD.KEY=VALUE",
              help="a hyper-parameter of one method (METHOD.aug.KEY for its augment; repeatable)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="training precision of every run (as sslzoo train)")
@click.option("--data-root", help="where data sets are stored")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="comparison directory; rerunning reuses its finished runs")
def compare(methods: str, sets: tuple[str, ...], out: str, **options: Any) -> None:
    """Train each method on the same data, backbone and step budget, and score it against
    the same backbone at random initialisation (compare.json, compare.md, compare.png)."""
    from sslzoo.compare import CompareSettings, format_table, parse_method_sets, run_compare

    names = [m.strip() for m in methods.split(",") if m.strip()]
    settings = CompareSettings(methods=names, sets=parse_method_sets(cfg.parse_assignments(sets), names),
                               **options)
    report = run_compare(settings, out, plugins=_plugins(), log=lambda m: click.echo(m, err=True))
    if not report["complete"]:
        click.echo(f"interrupted; finished runs are kept in {out}: rerun the same command to "
                   "continue", err=True)
        sys.exit(130)
    click.echo(format_table(report), nl=False)
    click.echo(f"wrote {Path(out) / 'compare.json'}, compare.md, compare.png")


# -- plot --------------------------------------------------------------------------------
@cli.command("plot")
@click.argument("run_dir", type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="folder for the PNG files [default: the run directory]")
@click.option("--embedding", type=click.Choice(["pca", "tsne", "none"]), default="pca",
              show_default=True, help="2-D projection of the frozen test features")
@click.option("--num", default=2000, show_default=True, type=click.IntRange(3, None),
              help="at most this many test images in the map")
@click.option("--data", help="labelled data set for the map [default: the run's]")
@click.option("--device", default="cpu", show_default=True, help="torch device")
@click.option("--random-init", is_flag=True, help="map the backbone at random initialisation")
def plot(run_dir: str, out_dir: str | None, embedding: str, num: int, data: str | None,
         device: str, random_init: bool) -> None:
    """Training curves (curves.png) and a map of frozen features (embedding.png).

    Needs matplotlib: pip install 'sslzoo[plot]'.
    """
    from sslzoo.plots import plot_run

    for path in plot_run(run_dir, out_dir, embedding=embedding, num=num, data=data,
                         device=device, random_init=random_init, plugins=_plugins()):
        click.echo(str(path))


# -- export ------------------------------------------------------------------------------
@cli.command()
@click.argument("path", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="output file: .safetensors (safetensors) or .pth (torch.save)")
@click.option("--format", "format_", type=click.Choice(["timm", "torchvision", "sslzoo"]),
              help="key names [default: timm for timm backbones, torchvision for tv_resnet*, "
                   "sslzoo for the small-image ResNets]")
def export(path: str, out: str, format_: str | None) -> None:
    """Save the pretrained backbone's weights, without heads, for timm or torchvision.

    Prints the file written; how to load it goes to stderr.
    """
    from sslzoo.runs import export_backbone

    done = export_backbone(path, out, format=format_, plugins=_plugins())
    click.echo(str(done.path))
    click.echo(f"{done.format} key names; load with: {done.how_to_load}", err=True)


def main() -> None:
    """Console entry point: loads plugin sub-commands, then runs the CLI."""
    from sslzoo.plugins import add_commands

    try:
        plugins = _plugins()
        plugins.broken.extend(add_commands(cli, plugins.manager))
    except SslzooError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    cli(prog_name="sslzoo")
