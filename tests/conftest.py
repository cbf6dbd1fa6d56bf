"""Shared fixtures: random-weight miniatures of every family, built once per session."""

from __future__ import annotations

import os

import pytest
import torch

from loco_lightning.models import FAMILIES, LocoModel
from tests.helpers import mini_model

ALL_FAMILIES = list(FAMILIES)


def pytest_configure(config) -> None:
    """One torch thread for the whole suite (``LOCO_TEST_THREADS`` to change): on the 2-core
    machines a second thread made the suite no faster (13 min either way), and thread counts
    change float reduction order, which the exactness tests (DDP ranks at one thread against
    this process; rows of one batch against each other) compare bit for bit."""
    torch.set_num_threads(int(os.environ.get("LOCO_TEST_THREADS", "1")))


# the slowest files (the world files run jobs on every world), started first and in this order so
# that no long group is left to one worker at the end (xdist keeps it: no loadscope reorder)
HEAVY = (
    "test_planted_localization",
    "test_world_models",
    "test_attack",
    "test_localize",
    "test_dit",
    "test_edit",
    "test_world_method",
    "test_cli",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into node ids
def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist (``--dist loadgroup``, one worker per core, each at one thread: the
    2-core CI's second core no longer idles), a file's tests run in one worker, since they share
    module fixtures and cached runs; the files that run jobs on every world split by world and
    attribute (what their cached runs are keyed by); the heavy files go first."""
    for item in items:
        params = getattr(item, "callspec", None)
        params = params.params if params else {}
        keys = [params[k] for k in ("world", "attribute") if isinstance(params.get(k), str)]
        # no brackets in the name: xdist (3.8) reads a group only after the nodeid's last "]"
        group = item.module.__name__ + (f":{'-'.join(keys)}" if keys else "")
        item.add_marker(pytest.mark.xdist_group(group))
    rank = {name: i for i, name in enumerate(HEAVY)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(HEAVY)))


@pytest.fixture(params=ALL_FAMILIES)
def mini(request) -> LocoModel:
    """The miniature of each family in turn (shared; tests must leave it unchanged)."""
    return mini_model(request.param)


@pytest.fixture
def sd1() -> LocoModel:
    return mini_model("sd1")
