"""Python twins of the Redis scripts in ``lua/``, run by the memory store.

``<name>.py`` here mirrors ``lua/<name>.lua`` line for line where it can: ``run(db, keys, args)``
takes a ``MemoryDB`` and returns what the script returns, as redis-py hands it over (bytes, not str),
and leaves the keys as the script leaves them in Redis. What they share is in ``_redis.py`` (Redis's
values, Lua's conversions), ``_breaker.py``, ``_activity.py`` and ``_cache_common.py``.
tests/integration/test_script_twins.py holds each twin to its Lua on a real Redis.
"""
