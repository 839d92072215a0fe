"""Loading finished (or interrupted) runs: a run directory or a checkpoint file."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sslzoo import checkpoint
from sslzoo import config as cfg
from sslzoo.build import RunSpec, build_method, from_dict
from sslzoo.errors import CheckpointError
from sslzoo.method import DataInfo, Method
from sslzoo.plugins import Plugins, default_plugins


@dataclass
class LoadedRun:
    """A method rebuilt from a run, with its trained weights."""

    spec: RunSpec
    method: Method
    run_dir: Path | None
    checkpoint_path: Path
    step: int
    config: dict[str, Any]


def find_checkpoint(path: str | Path) -> tuple[Path, Path | None]:
    """``(checkpoint file, run directory or None)`` for a run directory or a ``.pt`` file."""
    path = Path(path)
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.pt"
        if not ckpt.exists():
            raise CheckpointError(f"{path} holds no checkpoints/last.pt; is it an sslzoo run "
                                  "directory (made by `sslzoo train`)?")
        return ckpt, path
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        return path, run_dir
    raise CheckpointError(f"no run directory or checkpoint at {path}")


def load_run(path: str | Path, device: str | torch.device = "cpu", *,
             plugins: Plugins | None = None, random_init: bool = False) -> LoadedRun:
    """Rebuild a run's method and load its weights (``random_init``: keep the freshly
    initialised weights, the baseline that pretraining must beat)."""
    plugins = plugins or default_plugins()
    ckpt_path, run_dir = find_checkpoint(path)
    ckpt = checkpoint.load(ckpt_path, map_location=device)
    config = ckpt.get("config")
    if config is None and run_dir is not None and (run_dir / "config.json").exists():
        config = json.loads((run_dir / "config.json").read_text())
    if config is None:
        raise CheckpointError(f"{ckpt_path} carries no run configuration")
    spec = from_dict(config, plugins)
    model_state = ckpt["model"]
    num_samples = _num_samples(model_state, config)
    torch.manual_seed(spec.train.seed)
    method = build_method(spec, DataInfo(num_samples, spec.train.image_size), plugins)
    if not random_init:
        missing, unexpected = method.load_state_dict(model_state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{ckpt_path} does not match {spec.method_cls.name}: missing "
                                  f"{missing[:3]}, unexpected {unexpected[:3]}")
    method.to(device)
    return LoadedRun(spec, method, run_dir, ckpt_path, int(ckpt.get("step", 0)), config)


def _num_samples(state: dict[str, Any], config: dict[str, Any]) -> int:
    return int(config.get("num_samples", 0)) or 1


EXPORT_FORMATS = ("timm", "torchvision", "sslzoo")


@dataclass
class Export:
    """What :func:`export_backbone` wrote: the file, its key format and how to load it."""

    path: Path
    format: str
    how_to_load: str


def export_backbone(path: str | Path, out: str | Path, *, format: str | None = None,
                    plugins: Plugins | None = None) -> Export:
    """Write a run's backbone weights (no heads, no classifier) to ``out``.

    ``.safetensors`` files are written with the ``safetensors`` package, the format model
    hubs and timm read; any other suffix (``.pth``, ``.pt``) with ``torch.save``. Key
    names follow ``format``:

    * ``timm``: those of ``timm.create_model(name, num_classes=0)``, loadable with
      ``pretrained=True, pretrained_cfg_overlay=dict(file=out)``; the default for timm
      backbones, and available for torchvision ResNets (timm's ``resnet18`` has the
      same layers).
    * ``torchvision``: those of ``torchvision.models.resnet18()`` without ``fc``; the
      default for ``tv_resnet*`` backbones.
    * ``sslzoo``: the sslzoo backbone's own names, for backbones neither library builds
      (the small-image ResNets); load them with :func:`sslzoo.load` or
      ``create_backbone(name).load_state_dict(...)``.

    Raises:
        ConfigError: ``format`` does not apply to the run's backbone.
    """
    from sslzoo.backbones import TimmBackbone
    from sslzoo.errors import ConfigError

    run = load_run(path, "cpu", plugins=plugins)
    backbone, name = run.method.encoder, run.spec.train.backbone
    in_chans = int(getattr(backbone, "in_chans", 3))
    timm_name = _timm_name(backbone, name)
    tv_arch = _torchvision_arch(backbone, name)
    possible = [f for f, ok in (("timm", timm_name), ("torchvision", tv_arch), ("sslzoo", True)) if ok]
    format = format or possible[0]
    if format not in possible:
        raise ConfigError(f"--format {format} does not apply to backbone {name!r}; it can be "
                          f"exported as {' or '.join(possible)}")
    module = backbone.model if isinstance(backbone, TimmBackbone) else backbone
    state = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
    chans = f", in_chans={in_chans}" if in_chans != 3 else ""
    if format == "timm":
        how = (f"timm.create_model({timm_name!r}, num_classes=0{chans}, pretrained=True, "
               f"pretrained_cfg_overlay=dict(file={str(out)!r}))")
    elif format == "torchvision":
        how = (f"m = torchvision.models.{tv_arch}(); m.fc = torch.nn.Identity(); "
               "m.load_state_dict(weights)")
    else:
        how = (f"sslzoo.backbones.create_backbone({name!r}{chans}).load_state_dict(weights), "
               "or sslzoo.load(RUN).encoder; no timm or torchvision model has this stem")
    meta = {"format": format, "backbone": name, "in_chans": str(in_chans),
            "num_features": str(int(backbone.num_features)), "method": run.spec.method_cls.name,
            "step": str(run.step)}
    written = save_weights(state, out, metadata=meta)
    return Export(written, format, how)


def _timm_name(backbone: Any, name: str) -> str | None:
    """The timm model name that builds ``backbone`` with the same keys, if any."""
    from sslzoo.backbones import TIMM_PREFIX, TimmBackbone

    if isinstance(backbone, TimmBackbone):
        return name.removeprefix(TIMM_PREFIX)
    arch = _torchvision_arch(backbone, name)
    return arch  # timm's resnet18/34/50 have torchvision's layers and names


def _torchvision_arch(backbone: Any, name: str) -> str | None:
    """``resnet18`` for a ``tv_resnet18`` backbone (torchvision's ImageNet stem)."""
    from sslzoo.backbones import TorchvisionResNet

    if isinstance(backbone, TorchvisionResNet) and name.startswith("tv_"):
        return name.removeprefix("tv_")
    return None


def save_weights(state: dict[str, torch.Tensor], out: str | Path,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write a flat state dict atomically: safetensors for ``.safetensors``, else
    ``torch.save``."""
    out = Path(out)
    if out.suffix != ".safetensors":
        return checkpoint.save_atomic(state, out)
    import os
    import tempfile

    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def load(path: str | Path, device: str | torch.device = "cpu", *,
         plugins: Plugins | None = None) -> Method:
    """The trained method of a run directory or checkpoint, in eval mode.

    ``load(run).encoder`` is the pretrained backbone: ``encoder(images)`` gives pooled
    features ``(B, num_features)``, ``encoder.forward_features(images)`` spatial maps.
    Images are float in ``[0, 1]``; ``method.preprocess`` normalises them as in
    training.

    Raises:
        CheckpointError: no run or checkpoint at ``path``, or one that does not match.
    """
    return load_run(path, device, plugins=plugins).method.eval()


def check_loads_back(spec: RunSpec, plugins: Plugins | None = None) -> None:
    """Raise :class:`ConfigError` unless ``spec`` survives ``config.json``.

    Called before the first step, so that a run that trains can be resumed, evaluated and
    exported: each section goes through JSON and is parsed back field by field.
    """
    cfg.check_round_trip(spec.train, "train", where="--")
    cfg.check_round_trip(spec.method_config, f"method {spec.method_cls.name!r}")
    cfg.check_round_trip(spec.augment_config, f"augment {spec.augment_cls.name!r}",
                         where="--set aug.")
    from_dict(json.loads(json.dumps(spec.to_dict(), default=str)), plugins)


def load_run_and_test_images(path: str | Path, num: int, device: str | torch.device = "cpu", *,
                             method: str | None = None, plugins: Plugins | None = None
                             ) -> tuple[Method, torch.Tensor]:
    """A run's trained method and ``num`` of its test images (float in [0, 1]), for
    commands that show what a method does (``sslzoo inpaint``, ``sslzoo colorize``).

    Raises:
        ConfigError: the run was trained with another method than ``method``.
    """
    from sslzoo.data import load_data, sample_images
    from sslzoo.errors import ConfigError

    plugins = plugins or default_plugins()
    run = load_run(path, device, plugins=plugins)
    if method is not None and run.spec.method_cls.name != method:
        raise ConfigError(f"{path} was trained with {run.spec.method_cls.name!r}; this command "
                          f"works on {method} runs only")
    t = run.spec.train
    data = load_data(t.data, "test", t.image_size, root=t.data_root, download=False,
                     registry=plugins.datasets)
    images = sample_images(data, num, seed=0).to(device).float() / 255
    return run.method, images


def save_image_rows(rows: list[torch.Tensor], path: str | Path) -> Path:
    """Write a PNG grid with one row per batch of images (float in [0, 1], equal sizes)
    and one column per image, for a person to look at; returns the path."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat([r.detach().float().cpu() for r in rows]), path, nrow=len(rows[0]),
               padding=2, pad_value=1.0)
    return path


def add_image_grid_command(cli: Any, name: str, method: str, default_out: str,
                           render: Callable[[Method, torch.Tensor], list[torch.Tensor]],
                           help: str) -> None:
    """Add ``sslzoo NAME RUN [--out PNG] [--num N] [--device D]`` to ``cli``: ``num`` test
    images of a ``method`` run go through ``render(method, images)`` (rows of images,
    computed in eval mode without gradients) into a PNG grid, whose path is printed.

    For a plugin's ``register_commands`` hook (``sslzoo inpaint``, ``sslzoo colorize``).
    """
    import click

    @cli.command(name, help=help)
    @click.argument("run_dir", type=click.Path(exists=True))
    @click.option("--out", default=default_out, show_default=True,
                  type=click.Path(dir_okay=False), help="PNG file to write")
    @click.option("--num", default=16, show_default=True, type=click.IntRange(1, 256),
                  help="number of test images")
    @click.option("--device", default="cpu", show_default=True, help="torch device")
    def command(run_dir: str, out: str, num: int, device: str) -> None:
        trained, images = load_run_and_test_images(run_dir, num, device, method=method)
        click.echo(str(save_image_rows(render_rows(trained, images, render), out)))


def render_rows(method: Method, images: torch.Tensor,
                render: Callable[[Method, torch.Tensor], list[torch.Tensor]]
                ) -> list[torch.Tensor]:
    """``render(method, images)`` in eval mode without gradients (the mode is restored)."""
    from sslzoo.evaluation import eval_mode

    with eval_mode(method), torch.no_grad():
        return render(method, images)
