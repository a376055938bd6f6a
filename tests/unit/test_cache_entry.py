"""A stored answer's Age (app/cache/entry.py)."""

from __future__ import annotations

import pytest

from app.cache.entry import encode_head, read_answer


@pytest.mark.parametrize(("resident_ms", "age"), [(0, 30), (499, 30), (500, 31), (2_990, 33), (3_000, 33)])
def test_the_age_counts_the_time_here_to_the_nearest_second(resident_ms: int, age: int) -> None:
    """The store lands a few milliseconds after the answer went out: an answer read back 3 s after
    it arrived must not say 2 s (here: 30 s old when it arrived)."""
    head = encode_head(200, [(b"etag", b'"a"')], False, 30, (), None)
    status, headers, compressed, answered_age = read_answer(head, 1_000_000, 1_000_000 + resident_ms)
    assert (status, headers, compressed) == (200, [(b"etag", b'"a"')], False)
    assert answered_age == age
