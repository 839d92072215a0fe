"""Build tiny third-party plugin distributions (dist-info + module) on disk for tests."""
from __future__ import annotations

import textwrap
from pathlib import Path

TOY_METHOD = '''
"""A toy third-party method: predicts nothing, pulls two views together."""
from dataclasses import dataclass

import torch.nn.functional as F

import sslzoo
from sslzoo import OptimConfig, hp


class Toy(sslzoo.Method):
    """Toy: cosine distance between two views of every image."""

    name = "{name}"
    paper = "none"

    @dataclass
    class Config(OptimConfig):
        scale: float = hp(1.0, "loss scale", gt=0)

    def __init__(self, backbone, config, augment, data):
        super().__init__(backbone, config, augment, data)

    def training_step(self, images, index):
        a = self.backbone(self.preprocess(self.augment(images)))
        b = self.backbone(self.preprocess(self.augment(images)))
        return {{"loss": self.config.scale * (1 - F.cosine_similarity(a, b).mean())}}


@sslzoo.hookimpl
def register_methods(register):
    register(Toy)
'''


def make_dist(root: Path, dist: str, module: str, source: str, entry_points: dict[str, str],
              version: str = "0.1.0") -> Path:
    """Write ``module.py`` and ``<dist>-<version>.dist-info`` declaring ``[sslzoo]`` entry
    points into ``root``; put ``root`` on ``sys.path`` to install it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[sslzoo]\n{eps}\n")
    (info / "top_level.txt").write_text(module + "\n")
    (info / "RECORD").write_text("")
    return root
