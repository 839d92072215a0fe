from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sslzoo.momentum import (KeyQueue, SplitBatchNorm1d, SplitBatchNorm2d, batch_shuffle,
                             batch_unshuffle, convert_split_batch_norm, forward_bn_groups,
                             momentum_update, split_batch_norm)
from tests.dist_helpers import run_distributed


def _net(bn: type[nn.Module] = nn.BatchNorm2d) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), bn(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5),
                        nn.BatchNorm1d(5))
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-1, 1)
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    return net


# -- momentum update ----------------------------------------------------------------------

def test_momentum_update_follows_eq_2():
    online, target = _net(), _net()
    with torch.no_grad():
        for p in target.parameters():
            p.normal_()
    before = [p.clone() for p in target.parameters()]
    buffers = [b.clone() for b in target.buffers()]
    momentum_update(online, target, 0.9)
    for q, k0, k in zip(online.parameters(), before, target.parameters()):
        torch.testing.assert_close(k, 0.9 * k0 + 0.1 * q, rtol=0, atol=1e-6)
    for b0, b in zip(buffers, target.buffers()):  # running statistics are not mixed
        assert torch.equal(b0, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_momentum_as_a_device_tensor_follows_eq_2(dtype):
    """A schedule computed on the device (BYOL's tau) is applied without a host read."""
    online, target = _net(), _net()
    with torch.no_grad():
        for p in target.parameters():
            p.normal_()
    before = [p.clone() for p in target.parameters()]
    momentum_update(online, target, torch.tensor(0.9, dtype=dtype))
    for q, k0, k in zip(online.parameters(), before, target.parameters()):
        torch.testing.assert_close(k, 0.9 * k0 + 0.1 * q, rtol=0, atol=1e-6)
    momentum_update(online, target, torch.tensor(0.0, dtype=dtype))
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))


def test_momentum_one_keeps_the_target_and_zero_copies_the_online_encoder():
    online, target = _net(), _net()
    with torch.no_grad():
        for p in target.parameters():
            p.normal_()
    before = [p.clone() for p in target.parameters()]
    momentum_update(online, target, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, target.parameters()))
    momentum_update(online, target, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))


def test_momentum_update_rejects_a_different_architecture_and_bad_momentum():
    with pytest.raises(ValueError, match="copy of the online"):
        momentum_update(nn.Linear(3, 4), nn.Linear(4, 3), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        momentum_update(nn.Linear(3, 4), nn.Linear(3, 4), 1.5)


# -- key queue ----------------------------------------------------------------------------

def test_queue_starts_with_random_unit_keys_as_persistent_buffers():
    q = KeyQueue(8, 5)
    torch.testing.assert_close(q.keys.norm(dim=1), torch.ones(8))
    assert set(q.state_dict()) == {"keys", "ptr"} and int(q.ptr) == 0


def test_queue_rejects_a_batch_that_does_not_divide_its_size():
    with pytest.raises(ValueError, match="size 8 must be a multiple .* got 3"):
        KeyQueue(8, 2).push(torch.randn(3, 2))


def test_queue_pointer_wraps_around_and_the_oldest_keys_are_replaced():
    q = KeyQueue(8, 2)
    a, b, c = (torch.full((4, 2), float(v)) for v in (1, 2, 3))
    q.push(a)
    assert int(q.ptr) == 4 and torch.equal(q.keys[:4], a)
    q.push(b)
    assert int(q.ptr) == 0 and torch.equal(q.keys, torch.cat([a, b]))
    q.push(c)                                        # a, the oldest, is replaced
    assert int(q.ptr) == 4 and torch.equal(q.keys, torch.cat([c, b]))


# -- batch shuffle --------------------------------------------------------------------------

def test_single_process_unshuffle_inverts_shuffle():
    torch.manual_seed(0)
    x = torch.arange(12.0).view(6, 2)
    shuffled, unshuffle = batch_shuffle(x)
    assert not torch.equal(shuffled, x)
    assert torch.equal(shuffled[:, 0].sort().values, x[:, 0])        # a permutation
    assert torch.equal(batch_unshuffle(shuffled, unshuffle), x)


def _shuffle_two_ranks(rank: int, world_size: int) -> dict:
    torch.manual_seed(100 + rank)                   # the permutation must come from rank 0
    x = torch.arange(8.0).view(4, 2) + 8 * rank     # rank 0: 0..7, rank 1: 8..15
    shuffled, unshuffle = batch_shuffle(x)
    # a per-sample function of the shuffled share, as the key encoder is
    restored = batch_unshuffle(shuffled * 10, unshuffle)
    return {"x": x, "shuffled": shuffled, "restored": restored, "unshuffle": unshuffle}


def test_ddp_batch_shuffle_spreads_the_global_batch_and_unshuffle_restores_each_share():
    r0, r1 = run_distributed(_shuffle_two_ranks)
    assert torch.equal(r0["unshuffle"], r1["unshuffle"])          # one permutation, from rank 0
    both = torch.cat([r0["shuffled"], r1["shuffled"]])
    assert torch.equal(both[:, 0].sort().values, torch.arange(0.0, 16, 2))  # each sample once
    assert not torch.equal(both, torch.cat([r0["x"], r1["x"]]))
    for r in (r0, r1):
        assert torch.equal(r["restored"], r["x"] * 10)


# -- split batch norm -----------------------------------------------------------------------

def test_conversion_shares_parameters_and_buffers_and_changes_nothing_by_itself():
    net, ref = _net(), _net()
    tensors = {k: v for k, v in net.state_dict(keep_vars=True).items()}
    convert_split_batch_norm(net)
    assert (type(net[1]), type(net[5])) == (SplitBatchNorm2d, SplitBatchNorm1d)
    assert all(v is tensors[k] for k, v in net.state_dict(keep_vars=True).items())
    x = torch.randn(8, 3, 6, 6)
    torch.testing.assert_close(net(x), ref(x))
    assert type(convert_split_batch_norm(nn.BatchNorm2d(3))) is SplitBatchNorm2d


def test_split_batch_norm_equals_batch_norm_applied_to_each_group():
    net, ref = convert_split_batch_norm(_net()), _net()
    x = torch.randn(8, 3, 6, 6)
    with split_batch_norm(net, 2):
        out = net(x)
    # group g: samples 4g .. 4g+3
    expected = torch.cat([copy.deepcopy(ref)(part) for part in x.chunk(2)])
    torch.testing.assert_close(out, expected)


def test_split_batch_norm_running_statistics_move_by_the_mean_group_update():
    bn, ref = convert_split_batch_norm(nn.BatchNorm2d(3)), nn.BatchNorm2d(3)
    x = torch.randn(6, 3, 4, 4)
    with split_batch_norm(bn, 3):
        bn(x)
    groups = list(x.chunk(3))
    mean = torch.stack([g.mean(dim=(0, 2, 3)) for g in groups]).mean(0)
    var = torch.stack([g.transpose(0, 1).reshape(3, -1).var(dim=1) for g in groups]).mean(0)
    torch.testing.assert_close(bn.running_mean, 0.9 * ref.running_mean + 0.1 * mean)
    torch.testing.assert_close(bn.running_var, 0.9 * ref.running_var + 0.1 * var)
    assert int(bn.num_batches_tracked) == 1


def test_split_batch_norm_gradients_equal_per_group_batch_norm():
    net, ref = convert_split_batch_norm(_net()), _net()
    x = torch.randn(8, 3, 6, 6)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    with split_batch_norm(net, 4):
        (net(x1) ** 2).sum().backward()
    sum((ref(part) ** 2).sum() for part in x2.chunk(4)).backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    for p, r in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-4, atol=1e-4)


def test_split_batch_norm_leaves_eval_mode_alone_and_switches_back_after_the_block():
    net, ref = convert_split_batch_norm(_net()).eval(), _net().eval()
    x = torch.randn(4, 3, 6, 6)
    with split_batch_norm(net, 2):
        torch.testing.assert_close(net(x), ref(x))
    with pytest.raises(RuntimeError), split_batch_norm(net, 2):
        raise RuntimeError
    assert net[1].groups == net[5].groups == 1


def test_torch_compile_traces_the_split_without_graph_breaks():
    net, ref = convert_split_batch_norm(_net()), convert_split_batch_norm(_net())
    x = torch.randn(8, 3, 6, 6)
    compiled = torch.compile(lambda t: forward_bn_groups(net, t, 2), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), forward_bn_groups(ref, x, 2))


class _CustomBatchNorm(nn.BatchNorm2d):
    """A batch norm with a forward of its own (like timm's BatchNormAct2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


def test_forward_bn_groups_falls_back_to_one_pass_per_group_for_other_batch_norms():
    net, ref = convert_split_batch_norm(_net(_CustomBatchNorm)), _net(_CustomBatchNorm)
    assert type(net[1]) is _CustomBatchNorm
    x = torch.randn(8, 3, 6, 6)
    with pytest.raises(ValueError, match="convert_split_batch_norm"), split_batch_norm(net, 2):
        pass
    out = forward_bn_groups(net, x, 2)
    expected = torch.cat([copy.deepcopy(ref)(part) for part in x.chunk(2)])
    torch.testing.assert_close(out, expected)


def test_forward_bn_groups_keeps_channels_last_and_rejects_uneven_groups():
    net, ref = convert_split_batch_norm(_net()[:3]), convert_split_batch_norm(_net()[:3])
    x = torch.randn(4, 3, 6, 6)
    last = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x.requires_grad_()
    out, expected = forward_bn_groups(net, last, 2), forward_bn_groups(ref, x, 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected)   # the same groups
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(last.grad, x.grad)
    with pytest.raises(ValueError, match="6 cannot be split into 4"):
        forward_bn_groups(net, torch.randn(6, 3, 6, 6), 4)
