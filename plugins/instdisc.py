"""InstDisc: instance discrimination with a memory bank and NCE.

Wu, Xiong, Yu and Lin, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018. https://arxiv.org/abs/1805.01978
Official code: https://github.com/zhirongw/lemniscate.pytorch

Every training image is its own class. The backbone's pooled features go through a
linear layer to 128 dimensions and are L2-normalised (the official model's ``fc`` +
``Normalize``); a memory bank (:class:`sslzoo.memory.MemoryBank`) keeps one unit vector
per image. The non-parametric softmax ``P(i|v) = exp(v_i^T v / t) / sum_j exp(v_j^T v / t)``
(Eq. (2)) is approximated by noise-contrastive estimation with K = 4096 uniform noise
samples per image (Eq. (4)-(8), :func:`sslzoo.losses.nce_loss`); ``loss=softmax`` trains
the full softmax over the bank instead (the official ``LinearAverage``).

Where the paper leaves details open, this follows the official code:

* each image gets its own K noise rows, drawn uniformly with replacement, its own row
  possibly among them (``NCEAverage``);
* the normalising constant Z of Eq. (8) is estimated once, from the first batch, over
  the data and noise scores of all its images (``out.mean() * outputSize``), then kept
  fixed; it lives in the ``log_z`` buffer (as ``log Z``), so checkpoints resume it;
* the bank row of each image is updated after the loss with the step's feature,
  ``v <- normalize(0.5 v + 0.5 f)`` (``NCEFunction.backward``); here the update is
  applied in :meth:`InstDisc.on_step_end`, with rows and features gathered from all
  ranks under torch.distributed so the banks stay identical;
* the memory bank starts as random unit vectors (Sec. 3.1; the official code draws them
  uniformly in ``[-sqrt(3/d), sqrt(3/d)]`` without normalising, which we normalise).

Z is estimated against a still-random bank, so it is only right while most rows are
unwritten or spread out. On a small data set the bank fills with the untrained network's
nearly parallel features within a few steps, every noise sample then looks like data,
and NCE diverges (a bank of 1438 digits fills in about 6 steps of 256); ``loss=softmax`` has
no Z and does not diverge, and :meth:`InstDisc.prepare` warns when ``nce_k`` is at
least the number of images. Even the softmax needs an epoch of many steps: during the
first epoch each image's positive is its still-random bank row, and that is what spreads
the embeddings apart. When an epoch is a handful of steps (the digits at batch 256), the
128-d embeddings instead drift together and collapse (mean cosine 0.999 after 10 steps),
a fixed point where the loss is log n and its gradient vanishes. The backbone's pooled
features, which evaluation uses, still improve there (kNN 0.852 -> 0.905), but InstDisc
proper needs a data set of thousands of batches per epoch, as in the paper.

The proximal regulariser of Sec. 3.3, ``lambda ||v_i^(t) - v_i^(t-1)||^2`` added to the
data term, is not in the official code; it is off by default (``proximal=0``); the paper
shows it smoothing training for lambda between 10 and 50.

Defaults are the official ImageNet script's (``main.py``, the README's ImageNet
command): SGD, momentum 0.9, "--lr 0.03" at "-b 256", weight decay 1e-4, NCE with
"--nce-k 4096 --nce-t 0.07", the rate dropped 10x at epochs 120 and 160 of 200
(``lr_milestones = (0.6, 0.8)``), and the ``instdisc`` augment (its ``main.py``
pipeline, grayscale before jitter). The ``cifar`` recipe is the official CIFAR-10
script (``cifar.py``) with the README's command ``python cifar.py --nce-k 0 --nce-t 0.1
--lr 0.03``: the full softmax, temperature 0.1, lr 0.03 at its batch of 128, weight decay
5e-4, colour jitter before grayscale, no flip (commented out there), and the same drops
at epochs 120 and 160 of 200 (``lr * 0.1 ** ((epoch - 80) // 40)`` from epoch 80).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

import sslzoo
from sslzoo import distributed
from sslzoo.config import hp
from sslzoo.heads import ProjectionHead
from sslzoo.losses import nce_loss
from sslzoo.memory import MemoryBank
from sslzoo.method import DataInfo, Method, OptimConfig, Schedule
from sslzoo.recipes import Recipe


class InstDisc(Method):
    """Non-parametric instance discrimination: memory bank + NCE (or full softmax)."""

    name: ClassVar[str] = "instdisc"
    paper: ClassVar[str] = (
        "Wu et al., Unsupervised Feature Learning via Non-Parametric Instance "
        "Discrimination, CVPR 2018. https://arxiv.org/abs/1805.01978")
    default_augment: ClassVar[str] = "instdisc"
    recipes: ClassVar[dict[str, Recipe]] = {
        "cifar": Recipe(
            "CIFAR-size images (32 px): full softmax over the memory bank, temperature 0.1, "
            "batch 128, jitter before grayscale, no flip.",
            "lemniscate.pytorch README ('python cifar.py --nce-k 0 --nce-t 0.1 --lr 0.03') "
            "and cifar.py (batch 128, SGD wd 5e-4, drops at epochs 120 and 160 of 200)",
            method={"loss": "softmax", "temperature": 0.1, "lr": 0.03, "lr_batch": 128,
                    "weight_decay": 5e-4, "lr_milestones": (0.6, 0.8)},
            augment={"grayscale_first": False, "hflip_prob": 0.0},
            train={"image_size": 32, "batch_size": 128, "epochs": 200}),
        "imagenet": Recipe(
            "ImageNet-size images (224 px): NCE with 4096 noise samples, temperature 0.07, "
            "batch 256 (global: divide it by the number of processes).",
            "lemniscate.pytorch README ImageNet command (--nce-k 4096 --nce-t 0.07 --lr 0.03 "
            "-b 256) and main.py (wd 1e-4, drops at epochs 120 and 160 of 200)",
            method={"loss": "nce", "temperature": 0.07, "lr": 0.03, "lr_batch": 256,
                    "weight_decay": 1e-4},
            train={"image_size": 224, "batch_size": 256, "epochs": 200}),
    }

    @dataclass
    class Config(OptimConfig):
        lr: float = hp(0.03, "learning rate per 256 images (paper Sec. 4: 0.03 at batch 256)",
                       gt=0)
        momentum: float = hp(0.9, "SGD momentum (official code: 0.9)", ge=0, lt=1)
        weight_decay: float = hp(1e-4, "weight decay (official ImageNet main.py: 1e-4; "
                                 "cifar.py: 5e-4)", ge=0)
        wd_exclude_bias_norm: bool = hp(
            False, "no weight decay on biases and norm weights "
                   "(official code: every parameter decays)")
        schedule: Schedule = hp("step", "learning-rate schedule (paper: step drops)")
        lr_milestones: tuple[float, ...] = hp(
            (0.6, 0.8), "fractions of the run where the lr drops 10x (official main.py and "
                        "cifar.py: epochs 120 and 160 of 200)", gt=0, lt=1)
        proj_dim: int = hp(128, "embedding width (paper: 128)", ge=1)
        loss: Literal["nce", "softmax"] = hp(
            "nce", "'nce': NCE with nce_k noise samples (Eq. (7)); 'softmax': full "
            "non-parametric softmax over the memory bank (Eq. (2))", choices=("nce", "softmax"))
        nce_k: int = hp(4096, "noise samples per image for NCE (paper: K = 4096)", ge=1)
        temperature: float = hp(0.07, "softmax temperature t (paper and ImageNet command: "
                                      "0.07; CIFAR command: 0.1)", gt=0)
        bank_momentum: float = hp(0.5, "memory bank momentum m in v <- normalize(m v + "
                                  "(1-m) f) (official code: 0.5)", ge=0, lt=1)
        proximal: float = hp(0.0, "proximal regulariser lambda (Sec. 3.3; the paper shows "
                             "10-50; 0 = off, as the official code)", ge=0)

    def __init__(self, backbone: sslzoo.Backbone, config: Any, augment: sslzoo.Augment,
                 data: DataInfo) -> None:
        super().__init__(backbone, config, augment, data)
        self.head = ProjectionHead([backbone.num_features, config.proj_dim])
        self.memory = MemoryBank(data.num_samples, config.proj_dim, config.bank_momentum)
        # log of NCE's normalising constant Z (Eq. (8)); NaN until the first batch sets it
        self.register_buffer("log_z", torch.tensor(float("nan")))
        self._z_known = False
        self._pending: tuple[Tensor, Tensor] | None = None
        self.register_load_state_dict_post_hook(InstDisc._forget_z)

    def prepare(self, images: Tensor) -> None:
        """Start every rank from rank 0's memory bank; warn about NCE on small data."""
        c, n = self.config, self.data.num_samples
        if c.loss == "nce" and c.nce_k >= n and distributed.is_main():
            warnings.warn(
                f"instdisc: nce_k={c.nce_k} noise samples per image but only {n} training "
                "images; NCE assumes far more images than noise samples (the paper: K=4096 "
                "on ImageNet and CIFAR), and its Z, estimated once against the initial "
                "random memory bank, is far off once a small bank fills up, so it tends to "
                "diverge. Use --set loss=softmax (the exact objective, Eq. (2)).",
                UserWarning, stacklevel=2)
        self.memory.sync_()

    def embed_normalized(self, x: Tensor) -> Tensor:
        """The unit 128-d embedding the memory bank stores: ``(B, proj_dim)``."""
        return F.normalize(self.head(self.backbone(self.preprocess(x))).float(), dim=1)

    def training_step(self, images: Tensor, index: Tensor) -> dict[str, Tensor]:
        f = self.embed_normalized(self.augment(images))                   # (B, D)
        c = self.config
        with torch.autocast(f.device.type, enabled=False):
            if c.loss == "softmax":
                logits = f @ self.memory.bank.T / c.temperature            # (B, n)
                out = {"loss": F.cross_entropy(logits, index),
                       "acc": (logits.detach().argmax(1) == index).float().mean()}
            else:
                out = self._nce(f, index)
            if c.proximal > 0:
                out["proximal"] = (f - self.memory(index)).pow(2).sum(1).mean()
                out["loss"] = out["loss"] + c.proximal * out["proximal"]
        if self.training:
            self._pending = (index.detach(), f.detach())
        return out

    def _nce(self, f: Tensor, index: Tensor) -> dict[str, Tensor]:
        c, n = self.config, self.memory.size
        rows = torch.cat([index[:, None], self.memory.sample(len(f), c.nce_k)], 1)  # (B, 1+K)
        scores = torch.einsum("bkd,bd->bk", self.memory(rows), f) / c.temperature   # (B, 1+K)
        if not self._z_known:
            self._estimate_z(scores.detach())
        log_p = scores - self.log_z                                  # log P(j|v), Eq. (4)
        loss = nce_loss(log_p[:, 0], log_p[:, 1:], 1.0 / n)
        # h(i, v) of the data samples (Eq. (6)): how sure NCE is that they are data
        p_data = torch.sigmoid(log_p[:, 0].detach() - math.log(c.nce_k / n))
        return {"loss": loss, "p_data": p_data.mean()}

    @torch.no_grad()
    def _estimate_z(self, scores: Tensor) -> None:
        """Set Z once (Eq. (8), official ``NCEAverage``): ``Z = n * mean(exp(scores))``
        over the first batch, averaged over ranks so that all ranks share it."""
        log_z = torch.logsumexp(scores.flatten().double(), 0) + math.log(
            self.memory.size / scores.numel())
        log_z = distributed.all_reduce_mean(log_z.exp()).log()
        # a Z already set (a resumed run's) is kept; decided on the device, no host read
        self.log_z.copy_(torch.where(torch.isnan(self.log_z), log_z, self.log_z))
        self._z_known = True

    def on_step_end(self) -> None:
        """Write this step's features into the memory bank (all ranks' rows)."""
        if self._pending is not None:
            index, f = self._pending
            self._pending = None
            self.memory.update(index, f)

    @staticmethod
    def _forget_z(module: torch.nn.Module, incompatible_keys: Any) -> None:
        module._z_known = False  # re-read log_z: the loaded state may not have set it yet

    @torch.no_grad()
    def embedding(self, x: Tensor) -> Tensor:
        """The L2-normalised 128-d embedding (Sec. 3.4 scores kNN on it, t = temperature)."""
        return self.embed_normalized(x)


@sslzoo.hookimpl
def register_methods(register: Any) -> None:
    register(InstDisc)
