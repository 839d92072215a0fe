"""The fused view pipeline: its draws follow the configured distributions (torchvision's
samplers as the reference), its application matches torchvision's functional ops image by
image, and it never reads a tensor back to the host."""
from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from scipy import stats
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from sslzoo.augment import (AUGMENTS, CropFlipAugment, MoCoV1Augment, SimCLRAugment,
                            ViewAugment, ViewConfig)
from sslzoo.views import FusedViews, ViewParams, adjust_hue, resized_crop_boxes
from tests.tiny import only

N = 4000


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def fused(config: ViewConfig, image_size: int = 16) -> FusedViews:
    return ViewAugment(config, image_size).fused


def same_distribution(a, b) -> bool:
    """Two-sample Kolmogorov-Smirnov: no evidence (p >= 0.001) that ``a`` and ``b`` differ."""
    return stats.ks_2samp(torch.as_tensor(a).numpy(), torch.as_tensor(b).numpy()).pvalue >= 1e-3


def close_rate(mask: torch.Tensor, p: float) -> bool:
    """A Bernoulli rate within 4.5 standard errors of ``p``."""
    return abs(mask.float().mean().item() - p) <= 4.5 * math.sqrt(p * (1 - p) / len(mask)) + 1e-9


def box_features(boxes: torch.Tensor, height: int, width: int) -> dict[str, torch.Tensor]:
    x0, y0, w, h = boxes.double().unbind(1)
    return {"area": w * h / (height * width), "aspect": w / h,
            "x": (x0 + 0.5) / (width - w + 1), "y": (y0 + 0.5) / (height - h + 1)}


@pytest.mark.parametrize("height, width, scale, ratio", [
    (40, 56, (0.08, 1.0), (3 / 4, 4 / 3)),     # SimCLR's
    (32, 32, (0.2, 1.0), (3 / 4, 4 / 3)),      # MoCo's
    (12, 60, (0.5, 1.0), (3 / 4, 4 / 3)),      # most draws do not fit: the fallback
    (60, 12, (0.9, 1.0), (1.0, 1.0)),
])
def test_resized_crop_boxes_follow_torchvision(height, width, scale, ratio):
    ours = resized_crop_boxes(N, height, width, scale, ratio, torch.device("cpu"))
    image = torch.empty(1, height, width)
    theirs = torch.tensor([T.RandomResizedCrop.get_params(image, list(scale), list(ratio))
                           for _ in range(N)], dtype=torch.float64)   # (top, left, h, w)
    theirs = theirs[:, [1, 0, 3, 2]]                                  # -> x0, y0, w, h
    assert (ours[:, 2] >= 1).all() and (ours[:, 0] >= 0).all()
    assert (ours[:, 0] + ours[:, 2] <= width).all() and (ours[:, 1] + ours[:, 3] <= height).all()
    assert torch.equal(ours, ours.round())                            # whole pixels
    a, b = box_features(ours, height, width), box_features(theirs, height, width)
    for name in a:
        assert same_distribution(a[name], b[name]), name
    whole = lambda boxes: (boxes[:, 2] == width) & (boxes[:, 3] == height)  # noqa: E731
    assert abs(whole(ours).float().mean() - whole(theirs).float().mean()) < 0.05


def test_padded_crop_offsets_are_uniform_over_the_padding_like_torchvision():
    views = fused(ViewConfig(crop="padded", crop_padding=0.25), image_size=16)
    offsets = views.sample(N, 16, 16, torch.device("cpu")).box[:, :2]
    padded = torch.empty(3, 24, 24)                                   # 16 + 2 x 4
    theirs = torch.tensor([T.RandomCrop.get_params(padded, (16, 16))[:2] for _ in range(N)])
    theirs = theirs.flip(1).float() - 4                               # (top, left) -> (dx, dy)
    assert set(offsets.flatten().tolist()) == set(range(-4, 5))
    for k in range(2):
        assert stats.chisquare(torch.bincount(offsets[:, k].long() + 4).numpy()).pvalue > 1e-3
        assert same_distribution(offsets[:, k], theirs[:, k])


def test_every_probability_and_range_is_the_configured_one():
    c = ViewConfig(hflip_prob=0.3, vflip_prob=0.6, rot90_prob=0.45, jitter_prob=0.7,
                   brightness=1.4, contrast=0.3, saturation=0.5, hue=0.15, grayscale_prob=0.25,
                   blur_prob=0.35, blur_sigma=(0.3, 1.7), solarize_prob=0.2)
    p = fused(c).sample(N, 20, 20, torch.device("cpu"))
    for mask, rate in [(p.hflip, 0.3), (p.vflip, 0.6), (p.turns > 0, 0.45), (p.jitter, 0.7),
                       (p.gray, 0.25), (p.blur, 0.35), (p.solarize, 0.2)]:
        assert mask.dtype == torch.bool and close_rate(mask, rate)
    turned = p.turns[p.turns > 0]
    assert stats.chisquare(torch.bincount(turned)[1:].numpy()).pvalue > 1e-3
    on, off = p.factors[p.jitter], p.factors[~p.jitter]
    assert torch.equal(off, torch.tensor([1.0, 1.0, 1.0, 0.0]).expand_as(off))
    for k, (low, high) in enumerate([(0.0, 2.4), (0.7, 1.3), (0.5, 1.5), (-0.15, 0.15)]):
        assert stats.kstest(on[:, k].numpy(), stats.uniform(low, high - low).cdf).pvalue > 1e-3
    assert stats.kstest(p.sigma.numpy(), stats.uniform(0.3, 1.4).cdf).pvalue > 1e-3
    # independent draws: the flips of one image say nothing of its grayscale
    assert abs(torch.corrcoef(torch.stack([p.hflip.float(), p.gray.float()]))[0, 1]) < 0.1


def test_the_jitter_order_is_a_uniform_permutation_per_batch():
    views = fused(ViewConfig())
    orders = [tuple(views.sample(2, 8, 8, torch.device("cpu")).order.tolist())
              for _ in range(2400)]
    counts = {perm: orders.count(perm) for perm in itertools.permutations(range(4))}
    assert sum(counts.values()) == len(orders)            # every draw is a permutation
    assert stats.chisquare(list(counts.values())).pvalue > 1e-3


def params(n: int, **fields) -> ViewParams:
    """Parameters with every operation neutral except ``fields``."""
    base = dict(box=torch.tensor([[0.0, 0.0, 16.0, 16.0]]).repeat(n, 1),
                hflip=torch.zeros(n, dtype=torch.bool), vflip=torch.zeros(n, dtype=torch.bool),
                turns=torch.zeros(n, dtype=torch.long), jitter=torch.zeros(n, dtype=torch.bool),
                factors=torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(n, 1),
                order=torch.arange(4), gray=torch.zeros(n, dtype=torch.bool),
                blur=torch.zeros(n, dtype=torch.bool), sigma=torch.ones(n),
                solarize=torch.zeros(n, dtype=torch.bool))
    return ViewParams(**{**base, **fields})


def test_a_resized_crop_is_torchvisions_resized_crop():
    x = torch.rand(32, 3, 48, 40)
    views = fused(only(crop="resized", crop_scale=(0.05, 1.0)), image_size=16)
    p = views.sample(32, 48, 40, torch.device("cpu"))
    out = views.apply(x, p)
    for image, view, (x0, y0, w, h) in zip(x, out, p.box.long().tolist()):
        ref = TF.resized_crop(image, y0, x0, h, w, [16, 16], antialias=False)
        if w >= 16 and h >= 16:        # every sample point lies inside the crop
            torch.testing.assert_close(view, ref, atol=2e-5, rtol=0)
        else:                          # upsampled: the border rows may blend the neighbours
            torch.testing.assert_close(view[:, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=2e-5,
                                       rtol=0)


def test_flips_and_turns_are_exact_and_in_order():
    x = torch.rand(24, 3, 16, 16)
    hflip = torch.arange(24) % 2 == 1
    vflip = torch.arange(24) % 3 == 1
    turns = torch.arange(24) % 4
    views = fused(only(hflip_prob=0.5, vflip_prob=0.5, rot90_prob=0.5))
    out = views.apply(x, params(24, hflip=hflip, vflip=vflip, turns=turns))
    for i, image in enumerate(x):
        ref = image.flip(-1) if hflip[i] else image
        ref = ref.flip(-2) if vflip[i] else ref
        assert torch.equal(out[i], torch.rot90(ref, int(turns[i]), dims=(-2, -1)))


def test_a_padded_crop_is_torchvisions_padded_crop_exactly():
    x = torch.rand(9, 3, 16, 16)
    shifts = torch.tensor([[dx, dy] for dx in (-4, 0, 3) for dy in (-2, 0, 4)], dtype=torch.float)
    box = torch.cat([shifts, torch.full((9, 2), 16.0)], 1)
    views = fused(only(crop="padded", crop_padding=0.25))
    out = views.apply(x, params(9, box=box))
    for image, view, (dx, dy) in zip(x, out, shifts.long().tolist()):
        ref = TF.crop(TF.pad(image, [4]), dy + 4, dx + 4, 16, 16)
        assert torch.equal(view, ref)


def reference_jitter(image: torch.Tensor, factors: list[float], order: list[int]) -> torch.Tensor:
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for k in order:
        image = ops[k](image, factors[k])
    return image


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)])
def test_colour_jitter_is_torchvisions_in_the_drawn_order(order):
    x = torch.rand(16, 3, 12, 12)
    views = fused(only(jitter_prob=1.0), image_size=12)
    p = views.sample(16, 12, 12, torch.device("cpu"))
    p.order = torch.tensor(order)
    out = views.apply(x, p)
    for image, view, f in zip(x, out, p.factors.tolist()):
        # torchvision's luma weighs red 0.2989 where ours is 0.299: 1e-4 at most
        torch.testing.assert_close(view, reference_jitter(image, f, list(order)), atol=1e-3,
                                   rtol=0)


def test_hue_rotation_matches_torchvision_on_greys_and_edges():
    x = torch.rand(12, 3, 10, 10)
    x[0] = 0.4                                             # grey: hue undefined, unchanged
    x[1, 0], x[1, 1] = x[1, 2], x[1, 2]                    # another grey
    x[2, 0] = x[2, 1]                                      # ties between the maxima
    shift = torch.linspace(-0.5, 0.5, 12)
    ours = adjust_hue(x, shift)
    for image, view, s in zip(x, ours, shift.tolist()):
        torch.testing.assert_close(view, TF.adjust_hue(image, s), atol=1e-5, rtol=0)


def test_grayscale_blur_and_solarize_are_torchvisions():
    x = torch.rand(12, 3, 20, 20)
    gray, blur = torch.arange(12) % 2 == 0, torch.arange(12) % 3 != 0
    solarize = torch.arange(12) % 4 == 1
    sigma = torch.linspace(0.1, 2.0, 12)
    views = fused(only(grayscale_prob=0.5, blur_prob=0.5, solarize_prob=0.5), image_size=20)
    out = views.apply(x, params(12, gray=gray, blur=blur, sigma=sigma, solarize=solarize))
    k = views.blur_kernel
    for i, image in enumerate(x):
        ref = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).expand(3, -1, -1) \
            if gray[i] else image
        ref = TF.gaussian_blur(ref, [k, k], [float(sigma[i])] * 2) if blur[i] else ref
        ref = TF.solarize(ref, 0.5) if solarize[i] else ref
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_the_whole_pipeline_is_torchvision_image_by_image():
    """SimCLR's settings with every operation at an even chance: each view equals
    torchvision's composition of the same operations with the same parameters."""
    config = dataclasses.replace(SimCLRAugment.Config(), crop_scale=(0.3, 1.0), vflip_prob=0.5,
                                 rot90_prob=0.5, solarize_prob=0.5, jitter_prob=0.5,
                                 grayscale_prob=0.5)
    x = torch.rand(48, 3, 40, 40)
    views = fused(config, image_size=16)
    p = views.sample(48, 40, 40, torch.device("cpu"))
    out = views.apply(x, p)
    k = views.blur_kernel
    for i, image in enumerate(x):
        x0, y0, w, h = p.box[i].long().tolist()
        ref = TF.resized_crop(image, y0, x0, h, w, [16, 16], antialias=False)
        ref = ref.flip(-1) if p.hflip[i] else ref
        ref = ref.flip(-2) if p.vflip[i] else ref
        ref = torch.rot90(ref, int(p.turns[i]), dims=(-2, -1))
        if p.jitter[i]:
            ref = reference_jitter(ref, p.factors[i].tolist(), p.order.tolist())
        if p.gray[i]:
            ref = (0.299 * ref[0] + 0.587 * ref[1] + 0.114 * ref[2]).expand(3, -1, -1)
        ref = TF.gaussian_blur(ref, [k, k], [float(p.sigma[i])] * 2) if p.blur[i] else ref
        ref = TF.solarize(ref, 0.5) if p.solarize[i] else ref
        # solarize flips a pixel at 0.5 +- 1e-4 either way, as the luma weights differ
        close = (out[i] - ref).abs() < 1e-3
        assert close.float().mean() > 0.999, i


@pytest.mark.parametrize("backend", ["fused", "kornia"])
@pytest.mark.parametrize("cls", AUGMENTS, ids=lambda c: c.name)
def test_no_pipeline_reads_the_device(cls, backend):
    """On the meta device a tensor has no values, so any host read (``item``, ``tolist``,
    ``bool``, boolean indexing, ``nonzero``) fails: the pipeline must run there."""
    config = dataclasses.replace(cls.Config(), vflip_prob=0.5, rot90_prob=0.5, solarize_prob=0.5,
                                 backend=backend)
    x = torch.empty(8, 3, 24, 24, device="meta")
    with torch.no_grad():
        out = cls(config, image_size=16).forward(x)
    assert out.shape == (8, 3, 16, 16) and out.device.type == "meta"


def test_the_meta_device_refuses_host_reads():
    """The check above can fail: each kind of host read raises on the meta device."""
    x = torch.empty(8, 3, 4, 4, device="meta")
    reads = [lambda: x.sum().item(), lambda: x.tolist(), lambda: bool(x.sum() > 0),
             lambda: x[x > 0.5], lambda: x.nonzero()]
    for read in reads:
        with pytest.raises((NotImplementedError, RuntimeError)):
            read()


@pytest.mark.parametrize("cls", [SimCLRAugment, MoCoV1Augment, CropFlipAugment],
                         ids=lambda c: c.name)
def test_both_backends_give_views_of_the_same_statistics(cls):
    """Same configuration, same images: the fused and kornia views agree in mean, spread,
    per-image mean and smoothness within sampling noise."""
    x = torch.rand(1, 3, 32, 32).pow(2).repeat(3000, 1, 1, 1) * 0.8 + 0.1
    x[..., :16] *= 0.5                                    # a left-right structure
    summaries = {}
    for backend in ("fused", "kornia"):
        config = dataclasses.replace(cls.Config(), backend=backend)
        out = cls(config, image_size=24)(x)
        summaries[backend] = dict(mean=out.mean((1, 2, 3)), sd=out.std((1, 2, 3)),
                                  left=out[..., :12].mean((1, 2, 3)) - out[..., 12:].mean((1, 2, 3)),
                                  edges=out.diff(dim=-1).abs().mean((1, 2, 3)))
    for name in summaries["fused"]:
        a, b = summaries["fused"][name], summaries["kornia"][name]
        assert abs(a.mean() - b.mean()) < 0.1 * b.std() + 2e-3, name
