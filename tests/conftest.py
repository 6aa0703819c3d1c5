"""Shared fixtures; the tiny models live in ``_models.py``."""

from __future__ import annotations

import os

import pytest
from torch.utils.data import DataLoader

from _models import make_data

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def val_loader() -> DataLoader:
    return DataLoader(make_data(64), batch_size=16)


@pytest.fixture
def train_loader() -> DataLoader:
    return DataLoader(make_data(32, seed=1), batch_size=16)
