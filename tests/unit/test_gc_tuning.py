"""The operator tunes the cyclic garbage collector once started (`handlers.tune_gc`): at
10,000 Namespaces its full collections, each traversing every live object, took a fifth
of the operator's CPU (issue 19)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from vectorschema.k8s import handlers


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_the_startup_objects_are_frozen_and_young_collections_are_rarer(
    restored_gc: None,
) -> None:
    gc.unfreeze()
    handlers.tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == handlers.GC_THRESHOLDS
    assert handlers.GC_THRESHOLDS[0] > 700  # Python's default
    # a full collection no longer sees what existed at startup
    tracked = len(gc.get_objects(generation=2))
    assert tracked < gc.get_freeze_count()
