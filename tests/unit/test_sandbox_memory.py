"""A sandboxed call on a big file asks for room in proportion to it (``more_memory``).

Real sandbox children with a real address-space limit: the same allocation fails at the
limit, succeeds inside ``more_memory``, and the next call meets the limit again.
"""

from __future__ import annotations

from h5guard import Sandbox
from h5guard._sandbox import more_memory

TARGET = "tests.unit._allocate:allocate"
LIMIT = 64 * 1024 * 1024


def test_a_call_gets_the_room_it_asks_for_and_the_next_call_the_limit_again() -> None:
    with Sandbox(workers=1, timeout=120, memory_limit=LIMIT) as box:
        refused = box.call(TARGET, 200, 0)
        assert refused.failure == "memory", refused
        allowed = box.call(TARGET, 200, 400)
        assert allowed.ok and allowed.value == 200 * 1024 * 1024, allowed
        again = box.call(TARGET, 200, 0)
        assert again.failure == "memory", again
        assert box.call(TARGET, 8, 0).ok  # the plain limit still leaves room


def test_outside_a_sandbox_child_nothing_is_limited_or_changed() -> None:
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    with more_memory(1024 * 1024):
        assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert resource.getrlimit(resource.RLIMIT_AS) == before
