"""The benchmark's results as markdown: the figures, the ratios to nginx, added latency, the targets."""

from __future__ import annotations

from typing import Any

# Issue 8's targets: gateway CPU per request (us), Redis round trips per request, added p99 (ms).
CPU_TARGETS = {"gw_proxy": 90, "gw_ratelimit": 140, "gw_miss": 200, "gw_hit": 90}
ROUND_TRIP_TARGETS = {"gw_ratelimit": 1, "gw_miss": 2, "gw_hit": 1}
ADDED_P99_TARGET_MS = 2.0
# The bare aiohttp proxy's CPU per request when the targets were set (docs/design.md). On a machine where
# the same program costs more, a target holds as a ratio to the floor measured in the same round.
FLOOR_WHEN_SET_US = 79
LABELS = {"gw_proxy": "(a) proxy-only", "gw_ratelimit": "(b) rate-limited", "gw_miss": "(c) miss + store",
          "gw_hit": "(d) cache hit"}
# An open-loop row whose generator fell further behind its schedule than this says nothing about the
# gateway: the machine was too busy (its targets are then not judged).
_LAG_MS = 10.0
# Above this share of the CPUs used by processes not ours, the run says so in its title.
_BUSY = 0.05


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def busy_note(data: dict[str, Any]) -> str | None:
    loads = [r["other_load"] for r in data["results"] if r.get("other_load") is not None]
    worst = max(loads, default=0.0)
    if worst > _BUSY:
        return (f"measured while other work ran on the machine (other processes used up to "
                f"{worst:.0%} of its {data['machine']['cpus']} CPUs during a run)")
    return None


def render(data: dict[str, Any]) -> str:
    results = {r["name"]: r for r in data["results"]}
    base = results.get("nginx_proxy", {})
    direct = results.get("direct", {})
    s = data["settings"]
    lines = [f"### Benchmark {data['started']} (commit {data['commit']})", ""]
    note = busy_note(data)
    lines.append(f"**{note}.** Absolute figures from such a run are noisy; compare the ratios." if note
                 else "Measured on a quiet machine.")
    machine = data["machine"]
    lines += ["", f"wrk: 1 thread, {s['connections']} connections, {s['runs']} round(s): each loads every "
              f"configuration in turn for {s['duration_s']:g} s, then the open loop; medians. Machine: "
              f"{machine['cpus']} CPUs, load average before {machine['loadavg_before'][0]}."
              + (" **Quick mode: too short to quote.**" if s["quick"] else ""), ""]
    lines += ["| configuration | req/s | p50 ms | p99 ms | CPU us/req | req/s vs nginx | p50 vs nginx "
              "| p99 vs nginx | CPU vs nginx | Redis round trips/req | Redis commands/req (in scripts too) "
              "| Redis CPU us/req |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["results"]:
        if r["status"].startswith(("n/a", "failed")):
            lines.append(f"| {r['title']} | {r['status']} | | | | | | | | | | |")
            continue
        gateway = r["name"].startswith(("gw", "bare"))
        flag = " (!)" if r["status"] != "ok" else ""
        lines.append(
            f"| {r['title']}{flag} | {_num(r['rps'])} | {_num(r['p50_ms'], 2)} | {_num(r['p99_ms'], 2)} "
            f"| {_num(r['cpu_us'])} "
            f"| {_ratio(r['rps'], base.get('rps')) if gateway else '-'} "
            f"| {_ratio(r['p50_ms'], base.get('p50_ms')) if gateway else '-'} "
            f"| {_ratio(r['p99_ms'], base.get('p99_ms')) if gateway else '-'} "
            f"| {_ratio(r['cpu_us'], base.get('cpu_us')) if gateway else '-'} "
            f"| {_num(r['redis_round_trips'], 2)} | {_num(r['redis_commands'], 2)} "
            f"| {_num(r.get('redis_cpu_us'))} |")
    suspect = [r for r in data["results"] if r["status"].startswith("suspect")]
    for r in suspect:
        lines.append(f"\n(!) {r['title']}: {r['status']}")

    lines += ["", f"Added latency, open loop at {s['open_loop_rate']:g} req/s for {s['open_loop_duration_s']:g} s "
              "per round, medians of the rounds (minus the direct backend's figures from the same run):", "",
              "| configuration | p50 ms | p99 ms | added p50 ms | added p99 ms | failed | generator lag ms |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    d = direct.get("open_loop") or {}
    for r in data["results"]:
        o = r.get("open_loop")
        if not o:
            continue
        added50 = o["p50_ms"] - d["p50_ms"] if d and r["name"] != "direct" else None
        added99 = o["p99_ms"] - d["p99_ms"] if d and r["name"] != "direct" else None
        lag = f"{o['late_start_ms']:.1f}" + (" (!)" if o["late_start_ms"] > _LAG_MS else "")
        lines.append(f"| {r['title']} | {o['p50_ms']:.2f} | {o['p99_ms']:.2f} | {_num(added50, 2)} "
                     f"| {_num(added99, 2)} | {o['failed']} | {lag} |")
    if any((r.get("open_loop") or {}).get("late_start_ms", 0) > _LAG_MS for r in data["results"]):
        lines += ["", f"(!) the generator itself fell more than {_LAG_MS:g} ms behind its schedule: the machine "
                  "was too busy during that row for its percentiles (or the added latency from it) to mean much."]

    floor = results.get("bare_proxy", {}).get("cpu_us")
    lines += ["", "Targets (issue 8). The CPU targets were set where the bare aiohttp proxy cost "
              f"{FLOOR_WHEN_SET_US} us/req; in this run it cost {_num(floor)} us/req (median). The last column "
              "holds each configuration's CPU to the floor's measured in the same round (median of the rounds' "
              f"ratios) against the target's ratio to {FLOOR_WHEN_SET_US} us.", "",
              "| target | measured | met as written | met, as a ratio to this run's floor |", "|---|---:|---|---|"]
    lines += _targets(results, d)
    lines += ["", "Components: " + ", ".join(f"{k} {v}" for k, v in data["components"].items())]
    return "\n".join(lines)


def _verdict(value: float | None, limit: float, incomplete: list[str] | None = None) -> str:
    if value is None:
        return "n/a"
    if incomplete:  # the configuration lacks a component it will have: too early to judge
        return f"not judged ({', '.join(incomplete)} missing)"
    return "met" if value <= limit else "not met"


def _targets(results: dict[str, dict[str, Any]], direct_open: dict[str, Any]) -> list[str]:
    rows = []
    for name, limit in CPU_TARGETS.items():
        r = results.get(name, {})
        ok = r.get("status") == "ok"
        value = r.get("cpu_us") if ok else None
        ratio = r.get("cpu_vs_floor") if ok else None
        part = r.get("incomplete")
        allowed = limit / FLOOR_WHEN_SET_US
        relative = (f"{_verdict(ratio, allowed, part)} ({ratio:.2f}x, target <= {allowed:.2f}x)"
                    if ratio is not None else "n/a")
        rows.append(f"| {LABELS[name]}: CPU <= {limit} us/req | {_num(value)} | {_verdict(value, limit, part)} "
                    f"| {relative} |")
    for name, limit in ROUND_TRIP_TARGETS.items():
        r = results.get(name, {})
        value = r.get("redis_round_trips") if r.get("status") == "ok" else None
        rows.append(f"| {LABELS[name]}: <= {limit} Redis round trip(s)/req | {_num(value, 2)} "
                    f"| {_verdict(value, limit + 0.05, r.get('incomplete'))} | |")
    for name in CPU_TARGETS:
        r = results.get(name, {})
        o = r.get("open_loop")
        value = o["p99_ms"] - direct_open["p99_ms"] if o and direct_open else None
        verdict = _verdict(value, ADDED_P99_TARGET_MS, r.get("incomplete"))
        if value is not None and max(o["late_start_ms"], direct_open["late_start_ms"]) > _LAG_MS:
            verdict = "not judged (machine too busy: the generator lagged)"
        rows.append(f"| {LABELS[name]}: added p99 <= {ADDED_P99_TARGET_MS:g} ms at 1,000 req/s "
                     f"| {_num(value, 2)} | {verdict} | |")
    return rows
