"""The Redis scripts' Lua sources, read the same way from a checkout and from an installed wheel.

``lua/`` at the repository's top is the scripts' one source. A wheel carries those files as the
package data of ``app.lua`` (setup.py maps that package onto ``lua/``); a checkout, run in place or
installed editable, has no ``app/lua/`` and reads ``lua/`` beside the package.

Every script the gateway calls must be found. Were one missing, each call of it would fail, its
callers would degrade, and a rate limit would let every request through; so reading the sources
fails loudly instead, naming what is missing and where it looked.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

# The scripts the gateway calls, by name: ``lua/<name>.lua``.
SCRIPT_NAMES = frozenset({
    "activity_add", "activity_top",
    "auth_failure",
    "breaker_acquire", "breaker_force", "breaker_record", "breaker_state", "breaker_trip",
    "cache_get", "cache_invalidate", "cache_peek", "cache_purge", "cache_release", "cache_set", "cache_stats",
    "config_change", "config_read",
    "health_claim", "health_report",
    "ratelimit",
})


class ScriptsMissing(RuntimeError):
    """Some of the gateway's Redis scripts are not where the package keeps them."""


def scripts_dir() -> Traversable:
    """The folder the scripts are read from: the wheel's ``app/lua/``, else the checkout's ``lua/``."""
    packaged = resources.files("app") / "lua"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "lua"


def script_sources() -> dict[str, str]:
    """name -> Lua source of every script in ``SCRIPT_NAMES``; ``ScriptsMissing`` if any is absent."""
    folder = scripts_dir()
    found = {entry.name.removesuffix(".lua"): entry for entry in folder.iterdir()
             if entry.name.endswith(".lua")} if folder.is_dir() else {}
    missing = sorted(SCRIPT_NAMES - found.keys())
    if missing:
        raise ScriptsMissing(
            f"Redis scripts missing from {folder}: {', '.join(missing)}. The package was installed "
            "without its lua/ files; reinstall it from the repository (pip install .), whose "
            "setup.py puts them in the wheel")
    return {name: found[name].read_text() for name in sorted(SCRIPT_NAMES)}
