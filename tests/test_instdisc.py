from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslzoo import config as cfg
from sslzoo.augment import Augment
from sslzoo.errors import ConfigError
from sslzoo.losses import nce_loss
from sslzoo.method import DataInfo
from sslzoo_plugins.instdisc import InstDisc
from tests.tiny import Identity, TinyBackbone
from tests.dist_helpers import run_distributed

N_DATA = 40






class RandomFlip(Augment):
    name = "test-flip"

    def forward(self, x: Tensor) -> Tensor:
        flip = torch.rand(len(x), device=x.device) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)


def sgd_step(module: nn.Module, lr: float = 0.1) -> None:
    """Plain gradient descent (building torch.optim.SGD costs seconds on first use)."""
    with torch.no_grad():
        for p in module.parameters():
            if p.grad is not None:
                p -= lr * p.grad
                p.grad = None


def make(seed: int = 0, augment: Augment | None = None, **overrides: object) -> InstDisc:
    torch.manual_seed(seed)
    config = cfg.build(InstDisc.Config, {"nce_k": 16, **overrides})
    return InstDisc(TinyBackbone(), config, augment or Identity(), DataInfo(N_DATA, 16))


def batch(seed: int = 0, size: int = 8) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(size, 3, 16, 16, generator=g), torch.randperm(N_DATA, generator=g)[:size]


def nce_reference(f: Tensor, bank: Tensor, rows: Tensor, t: float, z: float) -> Tensor:
    """Wu et al. 2018, Eq. (4), (6) and (7), one sample and one noise entry at a time."""
    n, k = bank.shape[0], rows.shape[1] - 1
    total = 0.0
    for b in range(len(f)):
        for col in range(k + 1):
            p = math.exp(float(bank[rows[b, col]] @ f[b]) / t) / z       # P(i|v), Eq. (4)
            h = p / (p + k * (1.0 / n))                                  # Eq. (6)
            total += math.log(h) if col == 0 else math.log(1.0 - h)
    return torch.tensor(-total / len(f))


def test_nce_loss_matches_the_paper_formula():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(4, 6, generator=g) * 2 - 1
    bank = F.normalize(torch.randn(30, 5, generator=g), dim=1)
    f = F.normalize(torch.randn(4, 5, generator=g), dim=1)
    rows = torch.randint(0, 30, (4, 6), generator=g)
    t, z = 0.07, 123.0
    scores = torch.einsum("bkd,bd->bk", bank[rows], f) / t
    log_p = scores - math.log(z)
    loss = nce_loss(log_p[:, 0], log_p[:, 1:], 1 / 30)
    assert torch.allclose(loss, nce_reference(f, bank, rows, t, z).float(), rtol=1e-5)


def test_nce_loss_gradient_matches_the_closed_form():
    # d/ds of -log h with h = sigmoid(s - log(K Pn)) is -(1 - h); of -log(1 - h) it is h.
    log_p = torch.tensor([[0.3, -1.0, 2.0]], requires_grad=True)
    nce_loss(log_p[:, 0], log_p[:, 1:], 0.1).backward()
    h = torch.sigmoid(log_p.detach() - math.log(2 * 0.1))
    assert torch.allclose(log_p.grad, torch.cat([-(1 - h[:, :1]), h[:, 1:]], 1))


def test_training_step_is_nce_against_the_bank_with_z_from_the_first_batch(monkeypatch):
    method = make()
    images, index = batch()
    noise = torch.randint(0, N_DATA, (8, 16), generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(method.memory, "sample", lambda *shape: noise)
    bank = method.memory.bank.clone()
    assert torch.isnan(method.log_z)
    out = method.training_step(images, index)
    f = method.embed_normalized(images).detach()
    rows = torch.cat([index[:, None], noise], 1)
    z = N_DATA * torch.exp(torch.einsum("bkd,bd->bk", bank[rows], f) / 0.07).mean()  # Eq. (8)
    assert torch.allclose(method.log_z, z.log(), rtol=1e-5)
    assert torch.allclose(out["loss"], nce_reference(f, bank, rows, 0.07, float(z)).float(),
                          rtol=1e-4)
    assert 0 < out["p_data"] < 1


def test_z_is_set_once_then_kept():
    method = make()
    method.training_step(*batch(0))
    method.on_step_end()
    first = method.log_z.clone()
    assert torch.isfinite(first)
    for seed in (1, 2):
        method.training_step(*batch(seed))
        method.on_step_end()
    assert torch.equal(method.log_z, first)


def test_step_writes_current_features_into_the_bank_with_momentum():
    method = make()
    images, index = batch()
    before = method.memory.bank.clone()
    method.training_step(images, index)
    assert torch.equal(method.memory.bank, before)        # nothing written before the step ends
    f = method.embed_normalized(images).detach()
    method.on_step_end()
    mixed = 0.5 * before[index] + 0.5 * f
    assert torch.allclose(method.memory.bank[index], F.normalize(mixed, dim=1), atol=1e-6)
    others = torch.ones(N_DATA, dtype=torch.bool)
    others[index] = False
    assert torch.equal(method.memory.bank[others], before[others])
    assert torch.allclose(method.memory.bank.norm(dim=1), torch.ones(N_DATA), atol=1e-6)


def test_eval_mode_step_leaves_the_bank_alone():
    method = make().eval()
    before = method.memory.bank.clone()
    method.training_step(*batch())
    method.on_step_end()
    assert torch.equal(method.memory.bank, before)


def test_softmax_option_is_the_full_non_parametric_softmax():
    method = make(loss="softmax")
    images, index = batch()
    bank = method.memory.bank.clone()
    out = method.training_step(images, index)
    f = method.embed_normalized(images).detach()
    total = 0.0
    for b in range(len(f)):                               # Eq. (2) over the whole bank
        denominator = sum(math.exp(float(bank[j] @ f[b]) / 0.07) for j in range(N_DATA))
        total += -math.log(math.exp(float(bank[index[b]] @ f[b]) / 0.07) / denominator)
    assert torch.allclose(out["loss"], torch.tensor(total / len(f)), rtol=1e-4)
    assert 0 <= out["acc"] <= 1


def test_proximal_term_adds_lambda_times_squared_distance_to_the_bank():
    images, index = batch()
    plain = make(loss="softmax").training_step(images, index)
    method = make(loss="softmax", proximal=30.0)
    out = method.training_step(images, index)
    f = method.embed_normalized(images).detach()
    distance = (f - method.memory.bank[index]).pow(2).sum(1).mean()
    assert torch.allclose(out["proximal"], distance, rtol=1e-5)
    assert torch.allclose(out["loss"], plain["loss"] + 30.0 * distance, rtol=1e-5)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_gradient_reaches_the_backbone(loss):
    method = make(loss=loss)
    method.training_step(*batch())["loss"].backward()
    for name, p in method.backbone.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert method.head[0].weight.grad.abs().sum() > 0


def test_resume_from_state_dict_gives_the_same_next_loss_and_bank():
    method = make(augment=RandomFlip())
    for seed in range(2):
        method.training_step(*batch(seed))["loss"].backward()
        sgd_step(method)
        method.on_step_end()
    resumed = make(seed=7, augment=RandomFlip())
    assert not torch.equal(resumed.memory.bank, method.memory.bank)
    resumed.load_state_dict(method.state_dict(), strict=True)
    results = []
    for m in (method, resumed):
        torch.manual_seed(42)                             # same noise and augmentation draws
        loss = m.training_step(*batch(5))["loss"]
        m.on_step_end()
        results.append((loss.detach(), m.memory.bank.clone(), m.log_z.clone()))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    assert torch.equal(results[0][2], results[1][2])


def test_prepare_warns_when_noise_samples_outnumber_the_images():
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    with pytest.warns(UserWarning, match="loss=softmax"):
        make(nce_k=N_DATA).prepare(images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(nce_k=N_DATA, loss="softmax").prepare(images)  # the exact softmax needs no noise
        make(nce_k=N_DATA - 1).prepare(images)


def test_config_bounds_are_checked():
    with pytest.raises(ConfigError, match="nce_k"):
        cfg.build(InstDisc.Config, {"nce_k": "0"})
    with pytest.raises(ConfigError, match="bank_momentum"):
        cfg.build(InstDisc.Config, {"bank_momentum": "1.0"})
    with pytest.raises(ConfigError, match="loss"):
        cfg.build(InstDisc.Config, {"loss": "hinge"})


def test_paper_defaults():
    c = InstDisc.Config()
    # the official ImageNet script (main.py): lr 0.03 at batch 256, wd 1e-4, T 0.07, NCE
    assert (c.optimizer, c.lr, c.lr_batch, c.momentum, c.weight_decay) == (
        "sgd", 0.03, 256, 0.9, 1e-4)
    assert (c.loss, c.schedule, c.lr_milestones, c.lr_gamma) == ("nce", "step", (0.6, 0.8), 0.1)
    assert not c.wd_exclude_bias_norm
    assert (c.proj_dim, c.nce_k, c.temperature, c.bank_momentum, c.proximal) == (
        128, 4096, 0.07, 0.5, 0.0)
    assert InstDisc.augment_name(c) == "instdisc"


def test_registers_through_the_plugin_loader():
    from sslzoo.plugins import load_plugins

    methods = load_plugins().methods
    assert "instdisc" in methods
    assert methods.get("instdisc").plugin == "sslzoo"
    assert methods.get("instdisc").obj is InstDisc


def _train_under_ddp(rank: int, world_size: int) -> dict:
    torch.manual_seed(rank)                               # different initial weights and bank
    config = cfg.build(InstDisc.Config, {"nce_k": 16})
    method = InstDisc(TinyBackbone(), config, RandomFlip(), DataInfo(N_DATA, 16))
    method.prepare(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    start = method.memory.bank.clone()
    model = nn.parallel.DistributedDataParallel(method, broadcast_buffers=False)
    for step in range(3):
        images, _ = batch(10 * step + rank, size=4)
        index = torch.arange(4) + 4 * (2 * step + rank)   # rows no other rank touches
        model(images, index)["loss"].backward()
        sgd_step(method)
        method.on_step_end()
    return {"start": start, "bank": method.memory.bank, "log_z": method.log_z}


def test_distributed_training_keeps_memory_banks_and_z_identical():
    r0, r1 = run_distributed(_train_under_ddp)
    assert torch.equal(r0["start"], r1["start"])
    assert torch.equal(r0["bank"], r1["bank"])
    assert torch.equal(r0["log_z"], r1["log_z"])
    written = (r0["bank"] != r0["start"]).any(dim=1)
    assert written[:24].all() and not written[24:].any()  # both ranks' rows, nothing else


def official_cifar_lr(epoch: int, lr: float = 0.03) -> float:
    """lemniscate.pytorch cifar.py ``adjust_learning_rate``, written out."""
    return lr * 0.1 ** ((epoch - 80) // 40) if epoch >= 80 else lr


def test_step_schedule_matches_the_official_cifar_script_epoch_by_epoch():
    from sslzoo.engine import lr_lambda

    c = InstDisc.Config()
    factor = lr_lambda(200, 0, c.schedule, c.lr_milestones, c.lr_gamma)
    for epoch in range(200):
        assert 0.03 * factor(epoch) == pytest.approx(official_cifar_lr(epoch)), epoch


def test_cifar_recipe_is_the_official_cifar_command():
    from sslzoo.build import resolve

    spec = resolve({"method": "instdisc", "recipe": "cifar"})
    c, a, t = spec.method_config, spec.augment_config, spec.train
    assert (c.loss, c.temperature, c.lr, c.lr_batch, c.weight_decay) == (
        "softmax", 0.1, 0.03, 128, 5e-4)
    assert c.lr_milestones == (0.6, 0.8)
    assert (a.grayscale_first, a.hflip_prob) == (False, 0.0)
    assert (t.image_size, t.batch_size, t.epochs) == (32, 128, 200)


def test_imagenet_recipe_is_the_official_imagenet_command():
    from sslzoo.build import resolve

    spec = resolve({"method": "instdisc", "recipe": "imagenet"})
    c, a = spec.method_config, spec.augment_config
    assert (c.loss, c.nce_k, c.temperature, c.lr, c.lr_batch, c.weight_decay) == (
        "nce", 4096, 0.07, 0.03, 256, 1e-4)
    assert a.grayscale_first and spec.train.image_size == 224
