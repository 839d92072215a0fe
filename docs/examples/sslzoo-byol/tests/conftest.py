"""Shared fixtures of the BYOL tests."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from byol_testing import SIZE


@pytest.fixture
def images() -> Tensor:
    torch.manual_seed(1)
    return torch.rand(6, 3, SIZE, SIZE)
