"""``settle_heap``: what ``serve`` and ``worker`` do to the garbage collector before they run."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from carehook.bootstrap import GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_leave_the_collector_and_the_young_generation_is_larger() -> None:
    built = _Node()  # stands for what start-up built: tracked before, frozen after
    assert gc.is_tracked(built)
    _young, older, oldest = gc.get_threshold()

    settle_heap()

    assert gc.get_freeze_count() > 0
    assert all(o is not built for o in gc.get_objects())  # out of every generation's walk
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, older, oldest)


@pytest.mark.usefixtures("restored_gc")
def test_cyclic_garbage_made_after_start_up_is_still_collected() -> None:
    settle_heap()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b

    gc.collect()

    assert gone() is None
