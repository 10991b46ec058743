"""The operator tunes the cyclic garbage collector once started (`handlers.tune_gc`), unless
`VECTORSCHEMA_GC_TUNING=false`: at 10,000 Namespaces its full collections, each traversing
every live object, took a third of the operator's CPU (issue 19)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from vectorschema.k8s import handlers
from vectorschema.k8s import settings as config


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    yield
    gc.unfreeze()
    if frozen:
        gc.freeze()
    gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.me = self


def test_garbage_is_collected_first_then_the_rest_frozen_and_young_collections_rarer(
    restored_gc: None,
) -> None:
    gc.unfreeze()
    gc.disable()  # no collection of its own between here and tune_gc
    try:
        cycle = Node()  # garbage only a cyclic collection frees
        gone = weakref.ref(cycle)
        del cycle
        assert gone() is not None
        handlers.tune_gc()
    finally:
        gc.enable()
    assert gone() is None, "garbage frozen with the live objects is never freed"
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == handlers.GC_THRESHOLDS
    # a full collection no longer sees what existed at startup
    assert len(gc.get_objects(generation=2)) < gc.get_freeze_count()


def test_the_switch_is_true_or_false_and_names_itself_otherwise() -> None:
    assert config.gc_tuning({}) is True
    assert config.gc_tuning({"VECTORSCHEMA_GC_TUNING": " True "}) is True
    assert config.gc_tuning({"VECTORSCHEMA_GC_TUNING": "false"}) is False
    assert config.gc_tuning({"VECTORSCHEMA_GC_TUNING": "0"}) is False
    with pytest.raises(ValueError, match="VECTORSCHEMA_GC_TUNING='off'"):
        config.gc_tuning({"VECTORSCHEMA_GC_TUNING": "off"})
