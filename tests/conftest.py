"""Shared fixtures: random-weight miniatures of every family, built once per session."""

from __future__ import annotations

import pytest

from loco_lightning.models import FAMILIES, LocoModel
from tests.helpers import mini_model

ALL_FAMILIES = list(FAMILIES)


@pytest.fixture(params=ALL_FAMILIES)
def mini(request) -> LocoModel:
    """The miniature of each family in turn (shared; tests must leave it unchanged)."""
    return mini_model(request.param)


@pytest.fixture
def sd1() -> LocoModel:
    return mini_model("sd1")
