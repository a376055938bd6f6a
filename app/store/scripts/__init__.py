"""Python twins of the Redis scripts in ``lua/``, run by the memory store.

``<name>.py`` here mirrors ``lua/<name>.lua`` line for line where it can: ``run(db, keys, args)``
takes a ``MemoryDB`` and returns what the script returns, as redis-py hands it over (bytes, not str).
"""
