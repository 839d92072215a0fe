from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslzoo.memory import MemoryBank
from tests.dist_helpers import run_distributed


def test_bank_starts_as_random_unit_vectors():
    torch.manual_seed(0)
    bank = MemoryBank(50, 8).bank
    assert bank.shape == (50, 8) and bank.dtype == torch.float32
    assert torch.allclose(bank.norm(dim=1), torch.ones(50), atol=1e-6)
    assert torch.linalg.matrix_rank(bank) == 8  # random directions, not a constant row


def test_update_is_normalized_momentum_mix_and_leaves_other_rows_alone():
    torch.manual_seed(0)
    memory = MemoryBank(10, 4, momentum=0.5)
    before = memory.bank.clone()
    index = torch.tensor([3, 7])
    f = F.normalize(torch.randn(2, 4), dim=1)
    memory.update(index, f)
    for row, i in enumerate(index.tolist()):
        mixed = 0.5 * before[i] + 0.5 * f[row]
        assert torch.allclose(memory.bank[i], mixed / mixed.norm(), atol=1e-6)
    untouched = [i for i in range(10) if i not in (3, 7)]
    assert torch.equal(memory.bank[untouched], before[untouched])
    assert torch.allclose(memory.bank.norm(dim=1), torch.ones(10), atol=1e-6)


def test_momentum_zero_replaces_the_row_with_the_normalized_feature():
    memory = MemoryBank(5, 3, momentum=0.0)
    memory.update(torch.tensor([2]), torch.tensor([[0.0, 3.0, 4.0]]))
    assert torch.allclose(memory.bank[2], torch.tensor([0.0, 0.6, 0.8]))


def test_repeated_index_is_updated_once_from_its_last_occurrence():
    torch.manual_seed(1)
    memory = MemoryBank(6, 3, momentum=0.5)
    before = memory.bank.clone()
    f = F.normalize(torch.randn(3, 3), dim=1)
    memory.update(torch.tensor([4, 1, 4]), f)
    mixed = 0.5 * before[4] + 0.5 * f[2]
    assert torch.allclose(memory.bank[4], mixed / mixed.norm(), atol=1e-6)


def test_many_repeats_match_a_loop_over_the_last_occurrences():
    torch.manual_seed(2)
    memory = MemoryBank(10, 4, momentum=0.3)
    before = memory.bank.clone()
    index = torch.randint(0, 10, (40,))                     # most rows repeat, some many times
    f = F.normalize(torch.randn(40, 4), dim=1)
    memory.update(index, f)
    expected = before.clone()
    for row in range(10):
        hits = (index == row).nonzero().flatten()
        if len(hits):
            mixed = 0.3 * before[row] + 0.7 * f[hits[-1]]
            expected[row] = mixed / mixed.norm()
    torch.testing.assert_close(memory.bank, expected, rtol=0, atol=1e-6)


def test_update_makes_no_host_read():
    """On the meta device any read of a value on the host raises (``unique`` did)."""
    memory = MemoryBank(10, 4).to("meta")
    memory.update(torch.zeros(6, dtype=torch.long, device="meta"), torch.empty(6, 4, device="meta"))


def test_lookup_and_noise_sampling_shapes():
    memory = MemoryBank(7, 5)
    rows = memory.sample(3, 11)
    assert rows.shape == (3, 11) and rows.dtype == torch.long
    assert rows.min() >= 0 and rows.max() < 7
    assert memory(rows).shape == (3, 11, 5)
    assert torch.equal(memory(torch.tensor([6])), memory.bank[6:7])


def test_bank_is_a_persistent_buffer_that_round_trips():
    torch.manual_seed(0)
    a = MemoryBank(9, 4)
    a.update(torch.tensor([0, 5]), torch.randn(2, 4))
    torch.manual_seed(1)
    b = MemoryBank(9, 4)
    assert not torch.equal(a.bank, b.bank)
    b.load_state_dict(a.state_dict(), strict=True)
    assert torch.equal(a.bank, b.bank)


@pytest.mark.parametrize("kwargs", [dict(size=0, dim=4), dict(size=4, dim=4, momentum=1.0),
                                    dict(size=4, dim=4, momentum=-0.1)])
def test_invalid_bank_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        MemoryBank(**kwargs)


def test_update_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="features"):
        MemoryBank(4, 3).update(torch.tensor([0, 1]), torch.randn(2, 4))


def _update_on_each_rank(rank: int, world_size: int) -> dict:
    torch.manual_seed(100 + rank)                        # a different initial bank per rank
    memory = MemoryBank(12, 4, momentum=0.5)
    memory.sync_()
    start = memory.bank.clone()
    for step in range(3):
        index = torch.tensor([rank * 6 + step, rank * 6 + step + 3])
        memory.update(index, torch.randn(2, 4))          # features differ on every rank
    return {"start": start, "bank": memory.bank}


def test_distributed_updates_keep_the_banks_identical_on_every_rank():
    r0, r1 = run_distributed(_update_on_each_rank)
    assert torch.equal(r0["start"], r1["start"])         # sync_ copied rank 0's bank
    assert torch.equal(r0["bank"], r1["bank"])
    changed = (r0["bank"] != r0["start"]).any(dim=1)
    # each rank's rows (0-5 from rank 0, 6-11 from rank 1) were written on both ranks
    assert changed.tolist() == [True] * 12
