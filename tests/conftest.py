"""Shared fixtures: random-weight miniatures of every family, built once per session."""

from __future__ import annotations

import os

import pytest
import torch

from loco_lightning.models import FAMILIES, LocoModel
from tests.helpers import mini_model

ALL_FAMILIES = list(FAMILIES)


def pytest_configure(config) -> None:
    """One torch process, so it takes both cores (``LOCO_TEST_THREADS`` to change). Subprocess
    tests run while this process waits, and DDP tests give each rank one thread."""
    torch.set_num_threads(int(os.environ.get("LOCO_TEST_THREADS", "2")))


@pytest.fixture(params=ALL_FAMILIES)
def mini(request) -> LocoModel:
    """The miniature of each family in turn (shared; tests must leave it unchanged)."""
    return mini_model(request.param)


@pytest.fixture
def sd1() -> LocoModel:
    return mini_model("sd1")
