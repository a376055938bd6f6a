"""One scrape for the whole replica under ``serve --workers``: the workers' metrics, merged.

prometheus_client's multiprocess mode covers only its own metric classes, and the request path
counts in plain lists (app/observability/metrics.py). So each worker writes its whole registry, as
samples, to a file of its own in a directory the parent made (every second and at each scrape), and
a scrape of any worker merges the files: counters and histograms are summed (a worker that died
keeps its last counts in the sum, so the replica's counters never go back), ``_created`` takes the
earliest, gauges take the highest among the workers still alive (a circuit as open as any worker
knows it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric

from app.observability.metrics import REGISTRY

log = logging.getLogger("apigw.metrics")

SNAPSHOT_PERIOD = 1.0

_shared: Path | None = None


def share(directory: str) -> None:
    """Make this process one worker of a replica whose snapshots are in ``directory``."""
    global _shared
    _shared = Path(directory)


def exposition() -> bytes:
    """The Prometheus text of this process, or of the whole replica when shared."""
    if _shared is None:
        return generate_latest(REGISTRY)
    write_snapshot()
    return generate_latest(_Merged(_read(_shared)))


def write_snapshot() -> None:
    if _shared is None:
        return
    families = [{"name": f.name, "documentation": f.documentation, "type": f.type, "unit": f.unit,
                 "samples": [[s.name, s.labels, s.value] for s in f.samples]} for f in REGISTRY.collect()]
    path = _shared / f"{os.getpid()}.json"
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(families))
    os.replace(partial, path)


async def keep_writing() -> None:
    """Write this worker's snapshot every ``SNAPSHOT_PERIOD`` seconds until cancelled."""
    while True:
        await asyncio.sleep(SNAPSHOT_PERIOD)
        try:
            write_snapshot()
        except OSError as error:  # a full disk must not stop the worker; the scrape shows stale counts
            log.warning("metrics snapshot not written: %s", error)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(directory: Path) -> list[tuple[bool, list[dict[str, Any]]]]:
    """Each worker's families, with whether that worker is alive."""
    snapshots = []
    for path in sorted(directory.glob("*.json")):
        try:
            families = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # replaced under the read: its next write is counted by the next scrape
        snapshots.append((_alive(int(path.stem)), families))
    return snapshots


def merge(snapshots: Iterable[tuple[bool, list[dict[str, Any]]]]) -> list[Metric]:
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for alive, families in snapshots:
        for family in families:
            name, kind = family["name"], family["type"]
            if name not in merged:
                merged[name] = Metric(name, family["documentation"], kind, family.get("unit", ""))
                values[name] = {}
            if kind in ("gauge", "info", "stateset") and not alive:
                continue
            cells = values[name]
            for sample, labels, value in family["samples"]:
                key = (sample, tuple(labels.items()))
                if key not in cells:
                    cells[key] = value
                elif sample.endswith("_created"):
                    cells[key] = min(cells[key], value)
                elif kind in ("gauge", "info", "stateset"):
                    cells[key] = max(cells[key], value)
                else:
                    cells[key] += value
    for name, metric in merged.items():
        for (sample, labels), value in values[name].items():
            metric.add_sample(sample, dict(labels), value)
    return list(merged.values())


class _Merged:
    """What generate_latest reads: an object with ``collect``."""

    def __init__(self, snapshots: list[tuple[bool, list[dict[str, Any]]]]) -> None:
        self.snapshots = snapshots

    def collect(self) -> list[Metric]:
        return merge(self.snapshots)
