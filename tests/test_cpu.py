"""The CPU levers: glibc's allocator, native bf16 detection, optimiser kernels, channels_last."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings

import pytest
import torch

from sslzoo import cpu, engine
from sslzoo.build import resolve
from sslzoo.cpu import SmallInputConv2d, convert_small_input_convs
from sslzoo.engine import Trainer, _kernel_options, resolve_precision

SPEC = {"method": "simclr", "data": "synthetic", "backbone": "small_resnet10", "image_size": 16,
        "batch_size": 16, "epochs": 1, "max_steps": 1, "device": "cpu"}
HEAD = {"proj_hidden_dim": 32, "proj_dim": 16}

#: allocates and frees 64 MiB, then allocates 60 MiB, printing the minor page faults of the
#: second allocation. The second is smaller because torch allocates aligned: an aligned
#: request of the same size needs a few bytes more than the freed block, which then fits
#: only when it happens to border the top of the heap.
FAULTS = """
import ctypes, resource, sys, torch
from sslzoo.cpu import keep_freed_memory
# no transparent huge pages: a 2 MiB page would fault once for 512 small ones, and whether
# the kernel has huge pages free varies from moment to moment
ctypes.CDLL(None, use_errno=True).prctl(41, 1, 0, 0, 0)   # PR_SET_THP_DISABLE
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
x = torch.ones(16 << 20); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(15 << 20); del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(cpu._glibc() is None, reason="glibc only")
def test_kept_freed_memory_is_reused_without_page_faults():
    # glibc's default maps the 60 MiB afresh: ~15k faults of 4 KiB pages
    untuned, tuned = _faults("default"), [_faults("tuned") for _ in range(3)]
    assert untuned > 4000, untuned
    assert max(tuned) < untuned / 4, (untuned, tuned)


@pytest.mark.parametrize("flags, native", [({"avx2", "avx512f"}, False),
                                           ({"avx512f", "avx512_bf16"}, True),
                                           ({"amx_tile", "amx_bf16"}, True), (set(), False)])
def test_native_bf16_needs_avx512_bf16_or_amx(flags, native):
    assert cpu.cpu_supports_bf16(frozenset(flags)) is native


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_is_fp32_on_the_cpu_even_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(engine, "cpu_supports_bf16", lambda: native)
    assert resolve_precision("auto", torch.device("cpu")) is None


@pytest.mark.parametrize("precision, autocast", [("auto", "off"), ("bf16", "bfloat16")])
def test_config_json_records_the_autocast_the_run_used(tmp_path, monkeypatch, precision, autocast):
    monkeypatch.setattr(engine, "cpu_supports_bf16", lambda: True)
    spec = resolve({**SPEC, "out": str(tmp_path), "precision": precision}, HEAD)
    Trainer(spec, quiet=True).fit()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["train"]["precision"] == precision
    assert config["autocast"] == autocast


def test_bf16_on_a_cpu_without_native_bf16_warns_that_it_is_emulated(monkeypatch):
    monkeypatch.setattr(engine, "cpu_supports_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated"):
        assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16


@pytest.mark.parametrize("cls", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_cuda_asks_for_fused_optimiser_kernels_and_the_cpu_for_foreach(cls):
    assert _kernel_options(cls, torch.device("cuda")) == {"fused": True}
    assert _kernel_options(cls, torch.device("cpu")) == {"foreach": True}


@pytest.mark.parametrize("optimizer", ["sgd", "lars", "adamw"])
def test_the_engine_builds_foreach_optimisers_on_the_cpu(tmp_path, optimizer):
    spec = resolve({**SPEC, "out": str(tmp_path)}, {**HEAD, "optimizer": optimizer})
    trainer = Trainer(spec, quiet=True)
    trainer._setup()
    assert trainer.optimizer.defaults["foreach"] is True


@pytest.mark.parametrize("mode, precision, expected", [
    ("auto", "fp32", True), ("auto", "bf16", True), ("on", "fp32", True), ("off", "fp32", False),
    ("off", "bf16", False)])
def test_channels_last_on_the_cpu_unless_turned_off(tmp_path, mode, precision, expected):
    spec = resolve({**SPEC, "out": str(tmp_path), "channels_last": mode,
                    "precision": precision}, HEAD)
    trainer = Trainer(spec, quiet=True)
    with warnings.catch_warnings():   # bf16 on a CPU without native bf16 warns
        warnings.simplefilter("ignore")
        trainer._setup()
    conv = next(m for m in trainer.method.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is expected
    images, _, _ = next(iter(trainer.loader))
    assert images.is_contiguous(memory_format=torch.channels_last) is expected
    assert trainer._extra()["channels_last"] is expected


def test_no_cpu_tuning_leaves_the_allocator_alone(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "keep_freed_memory", lambda: calls.append(1))
    for tuning in (False, True):
        spec = resolve({**SPEC, "out": str(tmp_path / str(tuning)), "cpu_tuning": tuning}, HEAD)
        Trainer(spec, quiet=True)._setup()
    assert calls == [1]


def _dirty_heap() -> None:
    """Leave freed blocks full of huge values, as a training step leaves its buffers."""
    junk = [torch.full((1 << 20,), 1e30) for _ in range(16)]
    del junk


@pytest.mark.parametrize("kernel, stride, padding, size",
                         [(3, 2, 1, 1), (7, 1, 3, 2), (7, 2, 3, 1), (2, 3, 1, 2)])
def test_small_input_convs_get_the_fp32_weight_gradient_under_cpu_bf16(kernel, stride, padding, size):
    """torch's CPU bf16 convolution computed these weight gradients from uninitialised
    memory (up to 1e38 or inf): jigsaw's 4 px tiles reach ResNet's last stage as 1x1."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 32, kernel, stride, padding, bias=False)
    ref = copy.deepcopy(conv)
    assert convert_small_input_convs(conv) == 1 and isinstance(conv, SmallInputConv2d)
    x = torch.randn(8, 64, size, size).relu()
    _dirty_heap()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    out.float().square().sum().backward()
    ref(x).square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, ref.weight.grad)
    assert out.dtype == torch.float32


def test_small_input_convs_keep_bf16_for_larger_inputs_and_their_state_dict():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8))
    keys = list(net.state_dict())
    assert convert_small_input_convs(net) == 1
    assert list(net.state_dict()) == keys
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net[0](torch.randn(2, 3, 4, 4)).dtype == torch.bfloat16
        assert net[0](torch.randn(2, 3, 3, 3)).dtype == torch.float32   # kernel-sized
    assert net[0](torch.randn(2, 3, 2, 2)).dtype == torch.float32   # no autocast: unchanged


@pytest.mark.parametrize("precision, converted", [("bf16", True), ("fp32", False)])
def test_the_engine_converts_convs_under_cpu_bf16_only(tmp_path, precision, converted):
    spec = resolve({**SPEC, "out": str(tmp_path), "precision": precision}, HEAD)
    trainer = Trainer(spec, quiet=True)
    with warnings.catch_warnings():   # bf16 on a CPU without native bf16 warns
        warnings.simplefilter("ignore")
        trainer._setup()
    convs = [m for m in trainer.method.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, SmallInputConv2d) is converted for m in convs)
