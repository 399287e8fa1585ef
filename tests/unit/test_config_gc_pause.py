"""freeze_survivors: cyclic garbage is collected first; frozen objects still die by refcount."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.config.gc_pause import freeze_survivors


class Node:
    """Something weakly referenceable that may point at itself."""

    other: Node | None = None


@pytest.fixture
def unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfreeze")
def test_cycles_are_collected_before_the_survivors_are_frozen() -> None:
    cycle = Node()
    cycle.other = cycle
    dead = weakref.ref(cycle)
    del cycle
    kept = Node()
    freeze_survivors()
    assert dead() is None
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # frozen: no longer scanned


@pytest.mark.usefixtures("unfreeze")
def test_a_frozen_object_dropped_later_is_freed() -> None:
    snapshot = Node()
    snapshot.other = Node()
    gone = weakref.ref(snapshot.other)
    freeze_survivors()
    del snapshot
    assert gone() is None
