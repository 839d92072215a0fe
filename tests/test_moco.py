from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslzoo import config as cfg
from sslzoo.augment import Augment
from sslzoo.backbone import Backbone
from sslzoo.engine import build_optimizer
from sslzoo.errors import ConfigError
from sslzoo.losses import info_nce
from sslzoo.method import DataInfo
from sslzoo.plugins import load_plugins
from sslzoo_plugins.moco import MoCo
from tests.dist_helpers import run_distributed


class TinyNet(Backbone):
    """Two convolutions, with or without batch norm."""

    def __init__(self, bn: bool = True) -> None:
        super().__init__()
        self.num_features = 8
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1),
                                 nn.BatchNorm2d(8) if bn else nn.Identity(), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, padding=1))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.net(x)


class FlipSecondView(Augment):
    """Deterministic views: the image itself, then its mirror image, in turn."""

    name = "test-flip"

    def __init__(self) -> None:
        super().__init__(image_size=8)
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return x if self.calls % 2 else x.flip(-1)


def make(bn: bool = True, num_samples: int = 1000, **overrides: Any) -> MoCo:
    values = {"queue_size": 16, "dim": 6, "mlp_hidden_dim": 16, "shuffle_bn_groups": 2, **overrides}
    return MoCo(TinyNet(bn), cfg.build(MoCo.Config, values), FlipSecondView(),
                DataInfo(num_samples, 8))


def images(n: int, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def encode(backbone: nn.Module, head: nn.Module, method: MoCo, x: Tensor) -> Tensor:
    return F.normalize(head(backbone(method.preprocess(x))), dim=1)


def slow_info_nce(q: Tensor, k: Tensor, queue: Tensor, t: float) -> Tensor:
    """MoCo Eq. (1): L_q = -log exp(q.k+/t) / (exp(q.k+/t) + sum_i exp(q.k_i/t))."""
    losses = []
    for i in range(len(q)):
        pos = torch.exp(q[i] @ k[i] / t)
        neg = sum(torch.exp(q[i] @ key / t) for key in queue)
        losses.append(-torch.log(pos / (pos + neg)))
    return torch.stack(losses).mean()


# -- registration and configuration ---------------------------------------------------------

def test_moco_registers_through_the_plugin_loader():
    plugins = load_plugins()
    assert "moco" in plugins.methods
    assert plugins.methods.get("moco").plugin == "sslzoo"
    assert {"moco-v1", "moco-v2"} <= set(plugins.augments.names())


def test_versions_choose_head_temperature_and_augment():
    v1, v2 = MoCo.Config(version=1), MoCo.Config()
    assert (v2.version, v1.temperature, v2.temperature) == (2, 0.07, 0.2)
    assert MoCo.Config(version=1, temperature=0.5).temperature == 0.5
    assert (MoCo.augment_name(v1), MoCo.augment_name(v2)) == ("moco-v1", "moco-v2")
    assert (v2.queue_size, v2.key_momentum, v2.dim, v2.lr, v2.lr_batch) == (65536, 0.999, 128, 0.03, 256)
    head1, head2 = MoCo.build_head(512, v1), MoCo.build_head(512, v2)
    assert [type(m) for m in head1] == [nn.Linear] and head1[0].weight.shape == (128, 512)
    assert [type(m) for m in head2] == [nn.Linear, nn.ReLU, nn.Linear]
    # official builder: dim_mlp = fc.weight.shape[1], the backbone's width
    assert head2[0].weight.shape == (512, 512) and head2[2].weight.shape == (128, 512)
    wide = MoCo.build_head(512, MoCo.Config(mlp_hidden_dim=2048))
    assert wide[0].weight.shape == (2048, 512)


def test_versions_choose_their_papers_learning_rate_schedule():
    v1, v2 = MoCo.Config(version=1), MoCo.Config()
    assert (v1.schedule, v1.lr_milestones, v1.lr_gamma) == ("step", (0.6, 0.8), 0.1)
    assert v2.schedule == "cosine"
    assert MoCo.Config(version=1, schedule="cosine").schedule == "cosine"


def test_sync_bn_leaves_the_shuffled_key_encoder_per_process():
    from sslzoo.engine import convert_sync_batch_norm

    method = convert_sync_batch_norm(make())
    kinds = {name: {type(m) for m in getattr(method, name).modules()}
             for name in ("backbone", "key_backbone")}
    assert nn.SyncBatchNorm in kinds["backbone"]
    assert not any(issubclass(k, nn.SyncBatchNorm) for k in kinds["key_backbone"])
    assert any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds["key_backbone"])


def test_an_unknown_version_is_a_config_error():
    with pytest.raises(ConfigError, match="version"):
        cfg.build(MoCo.Config, {"version": "3"})


def test_info_nce_matches_eq_1():
    torch.manual_seed(0)
    q, k, queue = (F.normalize(torch.randn(n, 5), dim=1) for n in (4, 4, 7))
    torch.testing.assert_close(info_nce(q, k, queue, 0.07), slow_info_nce(q, k, queue, 0.07))


# -- the training step ------------------------------------------------------------------------

@pytest.mark.parametrize("version", [1, 2])
def test_step_is_eq_1_with_keys_from_the_updated_key_encoder_then_enqueues_them(version):
    torch.manual_seed(0)
    m = make(bn=False, version=version, key_momentum=0.5)
    with torch.no_grad():  # a key encoder that differs from the query encoder
        for p in m.key_parameters():
            p.add_(0.3 * torch.randn_like(p))
    key_backbone, key_head = copy.deepcopy(m.key_backbone), copy.deepcopy(m.key_head)
    with torch.no_grad():  # official order: momentum update first, then the keys
        for mod, q_mod in ((key_backbone, m.backbone), (key_head, m.head)):
            for pk, pq in zip(mod.parameters(), q_mod.parameters()):
                pk.copy_(0.5 * pk + 0.5 * pq)
    queue0 = m.queue.keys.clone()
    x = images(4)
    out = m(x, torch.arange(4))
    q = encode(m.backbone, m.head, m, x)
    k = encode(key_backbone, key_head, m, x.flip(-1))
    torch.testing.assert_close(out["loss"], slow_info_nce(q, k, queue0, m.config.temperature))
    expected_acc = ((q * k).sum(1) > (q @ queue0.T).max(1).values).float().mean()
    torch.testing.assert_close(out["acc"], expected_acc)
    torch.testing.assert_close(m.queue.keys[:4], k.detach())
    assert torch.equal(m.queue.keys[4:], queue0[4:]) and int(m.queue.ptr) == 4


@pytest.mark.parametrize("version", [1, 2])
def test_symmetric_loss_adds_the_swapped_crops_and_enqueues_both_keys(version):
    torch.manual_seed(0)
    m = make(bn=False, version=version, key_momentum=0.5, symmetric=True)
    with torch.no_grad():
        for p in m.key_parameters():
            p.add_(0.3 * torch.randn_like(p))
    key_backbone, key_head = copy.deepcopy(m.key_backbone), copy.deepcopy(m.key_head)
    with torch.no_grad():  # one momentum update per step, before the keys
        for mod, q_mod in ((key_backbone, m.backbone), (key_head, m.head)):
            for pk, pq in zip(mod.parameters(), q_mod.parameters()):
                pk.copy_(0.5 * pk + 0.5 * pq)
    queue0 = m.queue.keys.clone()
    x = images(4)
    out = m(x, torch.arange(4))
    t = m.config.temperature
    q1, q2 = encode(m.backbone, m.head, m, x), encode(m.backbone, m.head, m, x.flip(-1))
    k1, k2 = encode(key_backbone, key_head, m, x), encode(key_backbone, key_head, m, x.flip(-1))
    # official CIFAR-10 demo: loss_12 + loss_21, against the same queue
    expected = slow_info_nce(q1, k2, queue0, t) + slow_info_nce(q2, k1, queue0, t)
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(m.queue.keys[:8], torch.cat([k1, k2]).detach())
    assert int(m.queue.ptr) == 8


def test_symmetric_loss_needs_a_queue_holding_both_crops_keys():
    with pytest.raises(ConfigError, match=r"queue_size=12 .* 2 crops"):
        make(queue_size=12, symmetric=True, shuffle_bn_groups=1)(images(4), torch.arange(4))


def test_cifar_recipe_is_the_official_cifar_demo():
    from sslzoo.build import resolve

    spec = resolve({"method": "moco", "recipe": "cifar"})
    c, a, t = spec.method_config, spec.augment_config, spec.train
    assert (c.queue_size, c.key_momentum, c.temperature, c.weight_decay) == (4096, 0.99, 0.1, 5e-4)
    assert (c.lr, c.lr_batch, c.schedule, c.version, c.shuffle_bn_groups) == (
        0.06, 512, "cosine", 1, 8)
    assert spec.augment_cls.name == "moco-v2" and a.blur_prob == 0 and a.crop_scale == (0.08, 1.0)
    assert (t.image_size, t.batch_size, t.epochs) == (32, 512, 200)


def test_keys_come_from_shuffled_split_batch_norm_and_queries_from_split_batch_norm():
    torch.manual_seed(0)
    m = make(key_momentum=1.0, shuffle_bn_groups=2)
    key_backbone, key_head = copy.deepcopy(m.key_backbone), copy.deepcopy(m.key_head)
    query_backbone = copy.deepcopy(m.backbone)
    x = images(8)
    torch.manual_seed(7)
    m(x, torch.arange(8))
    torch.manual_seed(7)
    perm = torch.randperm(8)                         # the step's only random draw
    x_k = x.flip(-1)[perm]
    # group g: shuffled samples 4g .. 4g+3
    k = torch.cat([encode(key_backbone, key_head, m, part) for part in x_k.chunk(2)])
    torch.testing.assert_close(m.queue.keys[:8], k[torch.argsort(perm)].detach())
    # the queries' first batch norm moved by the mean of its two groups' statistics
    conv = query_backbone.net[0]
    q_mean = torch.stack([conv(m.preprocess(part)).mean((0, 2, 3)) for part in x.chunk(2)]).mean(0)
    torch.testing.assert_close(m.backbone.net[1].running_mean,
                               0.9 * query_backbone.net[1].running_mean + 0.1 * q_mean.detach())


@pytest.mark.parametrize("version", [1, 2])
def test_key_encoder_gets_no_gradient_and_is_not_optimised(version):
    m = make(version=version)
    m(images(4), torch.arange(4))["loss"].backward()
    keys = list(m.key_parameters())
    assert keys and all(p.grad is None and not p.requires_grad for p in keys)
    query = list(m.backbone.parameters()) + list(m.head.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in query)
    optimised = {id(p) for g in build_optimizer(m, 0.1).param_groups for p in g["params"]}
    assert optimised == {id(p) for p in query}
    assert all(g["weight_decay"] == 1e-4 for g in build_optimizer(m, 0.1).param_groups)


def test_a_queue_size_not_divisible_by_the_batch_is_a_config_error_before_any_update():
    m = make(queue_size=8)
    before = [p.clone() for p in m.key_parameters()]
    with pytest.raises(ConfigError, match=r"queue_size=8 .* global batch size 3.*--set queue_size=6"):
        m(images(3), torch.arange(3))
    assert int(m.queue.ptr) == 0 and all(torch.equal(a, b) for a, b in zip(before, m.key_parameters()))
    m(images(4), torch.arange(4))                   # 8 % 4 == 0 is fine


def test_batch_norm_groups_must_divide_the_batch():
    with pytest.raises(ConfigError, match=r"batch size 4 .* shuffle_bn_groups=3"):
        make(shuffle_bn_groups=3)(images(4), torch.arange(4))
    with pytest.raises(ConfigError, match="at least 2 images per group"):
        make(shuffle_bn_groups=4)(images(4), torch.arange(4))


def test_a_queue_larger_than_the_data_set_warns_before_training():
    with pytest.warns(UserWarning, match="queue_size=16 exceeds the 10 training images"):
        make(num_samples=10).prepare(images(4))


def _train(m: nn.Module, opt: torch.optim.Optimizer, batches: list[Tensor]) -> list[float]:
    losses = []
    for x in batches:
        out = m(x, torch.arange(len(x)))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    return losses


def test_resume_from_state_dict_gives_an_identical_next_step():
    torch.manual_seed(0)
    m = make(key_momentum=0.9)
    opt = torch.optim.SGD(m.parameter_groups(), lr=0.5, momentum=0.9)
    _train(m, opt, [images(4, s) for s in range(3)])
    state, opt_state = copy.deepcopy(m.state_dict()), copy.deepcopy(opt.state_dict())
    assert {"queue.keys", "queue.ptr"} <= set(state) and any(k.startswith("key_backbone.") for k in state)
    torch.manual_seed(5)
    loss = _train(m, opt, [images(4, 9)])

    torch.manual_seed(1)
    fresh = make(key_momentum=0.9)
    assert not torch.equal(fresh.queue.keys, m.queue.keys)
    fresh.load_state_dict(state)                    # strict: every buffer was registered
    fresh_opt = torch.optim.SGD(fresh.parameter_groups(), lr=0.5, momentum=0.9)
    fresh_opt.load_state_dict(opt_state)
    torch.manual_seed(5)
    assert _train(fresh, fresh_opt, [images(4, 9)]) == loss
    for (name, a), b in zip(m.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


# -- two processes --------------------------------------------------------------------------

def _ddp_moco(rank: int, world_size: int, batches: list[Tensor]) -> dict:
    out = {}
    for bn in (False, True):
        torch.manual_seed(rank)                     # prepare and DDP must make the ranks agree
        m = make(bn=bn, key_momentum=0.9)
        m.prepare(batches[0])
        with warnings.catch_warnings():             # the engine's setting, deprecated name
            warnings.simplefilter("ignore", FutureWarning)
            ddp = nn.parallel.DistributedDataParallel(m, broadcast_buffers=False)
        opt = torch.optim.SGD(m.parameter_groups(), lr=0.5)
        half = len(batches[0]) // world_size
        out[bn] = {"loss": _train(ddp, opt, [x[rank * half:(rank + 1) * half] for x in batches]),
                   "queue": m.queue.keys, "ptr": m.queue.ptr,
                   "key": [p.detach() for p in m.key_parameters()],
                   "query": [p.detach() for p in m.backbone.parameters()]}
    return out


def test_two_processes_keep_queue_and_key_encoder_identical_and_match_one_process():
    batches = [images(8, s) for s in range(3)]
    r0, r1 = run_distributed(_ddp_moco, batches)
    for bn in (False, True):
        assert torch.equal(r0[bn]["queue"], r1[bn]["queue"]) and int(r0[bn]["ptr"]) == 8
        assert all(torch.equal(a, b) for a, b in zip(r0[bn]["key"], r1[bn]["key"]))
    # without batch norm, 2 x 4 images under DDP are one process with the batch of 8
    torch.manual_seed(0)
    ref = make(bn=False, key_momentum=0.9)
    losses = _train(ref, torch.optim.SGD(ref.parameter_groups(), lr=0.5), batches)
    mean_loss = [(a + b) / 2 for a, b in zip(r0[False]["loss"], r1[False]["loss"])]
    assert mean_loss == pytest.approx(losses, rel=1e-5)
    torch.testing.assert_close(r0[False]["queue"], ref.queue.keys)
    for a, b in zip(r0[False]["key"], ref.key_parameters()):
        torch.testing.assert_close(a, b)
