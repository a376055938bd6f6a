"""The instruction counter runs end to end when asked (``pytest -m perf tests/perf/test_instructions.py``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.perf.instructions import Count, dump_total, report
from tests.support import ROOT

pytestmark = pytest.mark.perf


def test_a_callgrind_dumps_total_and_the_table_of_ratios(tmp_path: Path) -> None:
    dump = tmp_path / "gw_proxy.1"
    dump.write_text("version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nfn=main\n1 5\ntotals: 123456\n")
    assert dump_total(dump) == 123456
    (tmp_path / "other").write_text("not a dump\n")
    with pytest.raises(ValueError):
        dump_total(tmp_path / "other")
    table = report([Count("floor", 10, 4_000_000), Count("gw_proxy", 10, 5_000_000)])
    assert "| floor | 10 | 400,000 | 1.00x |" in table and "| gw_proxy | 10 | 500,000 | 1.25x |" in table
    # 2 s of load at 1 M instructions a second of the idle process's own: 2 M of the 5 M are not the requests'.
    assert Count("gw_proxy", 10, 5_000_000, seconds=2.0, idle_per_second=1_000_000).per_request == 300_000


@pytest.mark.skipif(not (shutil.which("valgrind") and shutil.which("wrk") and shutil.which("nginx")),
                    reason="needs valgrind, wrk and nginx")
def test_the_floor_and_the_proxy_only_route_are_counted() -> None:
    done = subprocess.run([sys.executable, "-m", "tests.perf.instructions", "--cases", "floor", "gw_proxy",
                           "--seconds", "2"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    per_request = {name: float(rows[name].split("|")[3].strip().replace(",", "")) for name in ("floor", "gw_proxy")}
    # A proxied request runs some hundreds of thousands of instructions; a count off by a factor of
    # a thousand would be the wrong process or the wrong window, not the gateway's work.
    assert all(50_000 < n < 5_000_000 for n in per_request.values()), per_request
