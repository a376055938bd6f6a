"""deploy/grafana/apigw-dashboard.json asks only for series the gateway exports.

Every PromQL expression in the dashboard (panel targets and template variable queries) is parsed,
and each metric it selects must be a sample name of a family in the gateway's registry (the one
/_gateway/metrics serves): counters as ``_total``/``_created``, histograms as
``_bucket``/``_sum``/``_count``/``_created``, gauges by their own name. A renamed metric or a typo
in the dashboard would otherwise show as an empty panel only once someone looks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from app.observability.metrics import REGISTRY

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "apigw-dashboard.json"

# The sample names prometheus_client writes for a family of each type (family names carry no suffix).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "untyped": ("",),
    "info": ("_info",),
}
# Grafana's interval variables stand where PromQL wants a duration; other variables ($route) stand
# inside label matcher strings, where the parser takes them as they are.
_INTERVAL_VARIABLE = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*\w+\s*\)\s*$")


def exported_names() -> set[str]:
    """Every sample name the registry can expose, whether or not a labelled series exists yet."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def dashboard_expressions(node: Any) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable, at any depth (rows nest)."""
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield f"target {node.get('refId')!r}", node["expr"]
        query = node.get("query")
        if node.get("type") == "query":
            text = query.get("query") if isinstance(query, dict) else query
            matched = _LABEL_VALUES.match(text)
            yield f"variable {node.get('name')!r}", matched.group("selector") if matched else text
        for key, value in node.items():
            if key != "query":
                yield from dashboard_expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_expressions(item)


def metric_names(expression: str) -> set[str]:
    """The metric names an expression selects, read from its syntax tree."""
    tree = promql_parser.parse(_INTERVAL_VARIABLE.sub("5m", expression))
    selectors: list[Any] = []
    promql_parser.walk(tree, lambda node: selectors.append(node) if isinstance(node, promql_parser.VectorSelector) else None)
    names = set()
    for selector in selectors:
        assert selector.name, f"a selector without a metric name: {expression}"
        names.add(selector.name)
    return names


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_exported_names_follow_prometheus_naming() -> None:
    names = exported_names()
    assert {"apigw_requests_total", "apigw_gateway_overhead_seconds_bucket", "apigw_circuit_state",
            "apigw_store_round_trips_total"} <= names
    # The suffix rules do not let a family's bare name or a wrong suffix through.
    assert "apigw_requests" not in names
    assert "apigw_circuit_state_total" not in names
    assert "apigw_rate_limited_bucket" not in names


def test_metric_names_are_read_from_the_syntax_tree() -> None:
    assert metric_names('sum by (route) (rate(a_total{route=~"$route",status="b_total"}[$__rate_interval])) '
                        "/ on (route) group_left c") == {"a_total", "c"}
    with pytest.raises(ValueError):
        metric_names("sum(rate(a_total[5m])")


def test_every_expression_names_an_exported_metric() -> None:
    exported = exported_names()
    expressions = list(dashboard_expressions(_dashboard()))
    assert len(expressions) >= 15
    unknown = {f"{where}: {name}" for where, expression in expressions
               for name in metric_names(expression) if name not in exported}
    assert not unknown, f"the dashboard names metrics the gateway does not export: {sorted(unknown)}"


def test_dashboard_covers_what_an_operator_watches() -> None:
    used = set().union(*(metric_names(expression) for _, expression in dashboard_expressions(_dashboard())))
    # Request rate, latency percentiles, 429s, cache hit rate, circuit states, store errors, authentications.
    assert {"apigw_requests_total", "apigw_gateway_overhead_seconds_bucket", "apigw_backend_duration_seconds_bucket",
            "apigw_rate_limited_total", "apigw_cache_lookups_total", "apigw_circuit_state",
            "apigw_store_errors_total", "apigw_auth_total"} <= used


def test_panels_are_placed_once_and_read_the_chosen_datasource() -> None:
    panels = _dashboard()["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(target["datasource"]["uid"] == "${datasource}" for target in panel["targets"])
