"""The scripts the gateway calls are the files of lua/, and all of them are read (or none is)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.store import script_sources as sources
from app.store.script_sources import SCRIPT_NAMES, ScriptsMissing, script_sources

LUA = Path(__file__).resolve().parents[2] / "lua"


def test_every_file_of_lua_is_a_script_the_gateway_reads() -> None:
    assert SCRIPT_NAMES == {p.stem for p in LUA.glob("*.lua")}, "list a new lua/ file in SCRIPT_NAMES"
    assert script_sources() == {name: (LUA / f"{name}.lua").read_text() for name in SCRIPT_NAMES}


def test_a_missing_script_fails_loudly_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SCRIPT_NAMES - {"ratelimit"}:
        (tmp_path / f"{name}.lua").write_text((LUA / f"{name}.lua").read_text())
    monkeypatch.setattr(sources, "scripts_dir", lambda: tmp_path)
    with pytest.raises(ScriptsMissing, match=rf"missing from {tmp_path}: ratelimit\."):
        script_sources()
