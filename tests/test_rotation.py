"""The rotation (RotNet) plugin: loss, metric, gradients, learning, registration."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslzoo.augment import Augment
from sslzoo.backbone import Backbone
from sslzoo.config import build
from sslzoo.method import DataInfo
from sslzoo_plugins.rotation import Rotation


class TinyBackbone(Backbone):
    """Two strided convs; a 2x2 pooled map keeps where things are, so orientation shows."""

    num_features = 32

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())

    def forward_features(self, x: Tensor) -> Tensor:
        return self.net(x)

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.forward_features(x), 2).flatten(1)


class Identity(Augment):
    def forward(self, x: Tensor) -> Tensor:
        return x


def make(**overrides: object) -> Rotation:
    config = build(Rotation.Config, overrides)
    return Rotation(TinyBackbone(), config, Identity(), DataInfo(16, 16))


def oriented_images(n: int = 8, s: int = 16) -> Tensor:
    """Noise over a brightness ramp from top to bottom: upright has a meaning."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, s).view(1, 1, s, 1)
    return (0.6 * ramp + 0.4 * torch.rand(n, 3, s, s, generator=g)).clamp(0, 1)


def test_defaults_follow_the_paper() -> None:
    c = Rotation.Config()
    assert (c.optimizer, c.lr, c.lr_batch, c.momentum, c.weight_decay, c.nesterov) == (
        "sgd", 0.1, 128, 0.9, 5e-4, True)
    assert Rotation.augment_name(c) == "crop-flip"


def test_loss_and_accuracy_match_a_loop_over_rotated_copies() -> None:
    torch.manual_seed(0)
    m = make()
    x = torch.rand(3, 3, 16, 16)
    out = m(x, torch.arange(3))
    losses, correct = [], 0
    for k in range(4):
        for img in x:
            view = torch.rot90(img, k, dims=(1, 2))[None]
            logits = m.classifier(m.backbone(m.preprocess(view)))[0]
            losses.append(torch.logsumexp(logits, 0) - logits[k])
            correct += int(logits.argmax() == k)
    assert torch.allclose(out["loss"], torch.stack(losses).mean(), atol=1e-5)
    assert out["acc"].item() == pytest.approx(correct / 12)


def test_accuracy_metric_on_constructed_logits() -> None:
    m = make()
    batch = 4
    labels = torch.arange(4).repeat_interleave(batch)        # the order Rotations uses

    class Fixed(nn.Module):
        """Right for the first half of each rotation group, wrong for the second half."""

        def forward(self, f: Tensor) -> Tensor:
            pred = torch.where(torch.arange(16) % batch < batch // 2, labels, (labels + 1) % 4)
            return F.one_hot(pred, 4).float() + 0 * f[:, :1]

    m.classifier = Fixed()
    out = m(torch.rand(batch, 3, 16, 16), torch.arange(batch))
    assert out["acc"].item() == 0.5


def test_gradients_reach_backbone_and_classifier() -> None:
    m = make(head_hidden=16)
    m(torch.rand(4, 3, 16, 16), torch.arange(4))["loss"].backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert isinstance(m.classifier[-1], nn.Linear) and m.classifier[-1].out_features == 4


def test_rotation_accuracy_improves_with_training() -> None:
    torch.manual_seed(0)
    m = make()
    x = oriented_images()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True)

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            out = m(x, torch.arange(len(x)))
        return out["loss"].item(), out["acc"].item()

    loss0, _ = evaluate()
    for _ in range(12):
        opt.zero_grad()
        m(x, torch.arange(len(x)))["loss"].backward()
        opt.step()
    loss1, acc1 = evaluate()
    assert loss1 < 0.5 * loss0 and acc1 >= 0.9


def test_state_dict_round_trip_gives_identical_outputs() -> None:
    a = make()
    b = make()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(a(x, torch.arange(2))["loss"], b(x, torch.arange(2))["loss"])


def test_registers_through_the_plugin_loader() -> None:
    from sslzoo.plugins import load_plugins

    methods = load_plugins().methods
    assert "rotation" in methods
    entry = methods.get("rotation")
    assert entry.plugin == "sslzoo" and entry.obj is Rotation


@pytest.mark.parametrize("bad", [{"head_hidden": -1}, {"lr": 0}])
def test_invalid_config_is_rejected(bad: dict[str, object]) -> None:
    from sslzoo.errors import ConfigError

    with pytest.raises(ConfigError):
        build(Rotation.Config, bad)


def test_recipes_carry_the_papers_cifar_and_imagenet_schedules() -> None:
    from sslzoo.build import resolve

    cifar = resolve({"method": "rotation", "recipe": "cifar"})
    assert (cifar.train.image_size, cifar.train.batch_size, cifar.train.epochs) == (32, 128, 100)
    assert cifar.method_config.lr_milestones == (0.3, 0.6, 0.8)
    assert cifar.method_config.lr_gamma == 0.2
    imagenet = resolve({"method": "rotation", "recipe": "imagenet"})
    assert (imagenet.train.image_size, imagenet.train.batch_size) == (224, 192)
    assert imagenet.method_config.lr_milestones == (0.3, 0.6, 0.9)   # 15, 30, 45 of 50
    assert imagenet.augment_config.crop == "resized"
