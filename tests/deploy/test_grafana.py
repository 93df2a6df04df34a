"""deploy/grafana/video2mp3.json: a Grafana dashboard whose panels chart every metric the
services expose, by the exact names (and labels) they expose them with."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.deploy.conftest import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "video2mp3.json"

# name -> labels it has (histograms: the labels of their _bucket series, without `le`).
METRICS: dict[str, set[str]] = {
    "video2mp3_http_requests_total": {"service", "route", "method", "status"},
    "video2mp3_http_request_duration_seconds": {"service", "route", "method"},
    "video2mp3_upload_bytes_total": set(),
    "video2mp3_jobs_finished_total": {"status"},
    "video2mp3_conversion_seconds": set(),
    "video2mp3_conversion_speed_factor": set(),
    "video2mp3_queue_depth": {"queue"},
    "video2mp3_ffmpeg_failures_total": {"code"},
    "video2mp3_emails_total": {"result"},
}
HISTOGRAMS = {
    "video2mp3_http_request_duration_seconds",
    "video2mp3_conversion_seconds",
    "video2mp3_conversion_speed_factor",
}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    result = []
    for panel in dashboard["panels"]:
        result.append(panel)
        result.extend(panel.get("panels", []))
    return result


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


def test_dashboard_is_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"]
    assert dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    for panel in _panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"
            assert all(t["refId"] for t in panel["targets"])


def test_every_metric_is_charted_with_its_real_name() -> None:
    expressions = _expressions(json.loads(DASHBOARD.read_text()))
    text = "\n".join(expressions)
    for name in METRICS:
        wanted = f"{name}_bucket" if name in HISTOGRAMS else name
        assert re.search(rf"\b{wanted}\b", text), f"no panel for {name}"


def test_expressions_use_only_known_metrics_and_labels() -> None:
    for expr in _expressions(json.loads(DASHBOARD.read_text())):
        assert expr.count("(") == expr.count(")"), expr
        for match in re.finditer(r"\b(video2mp3_[a-z_]+)\b(\{[^}]*\})?", expr):
            series, selector = match.group(1), match.group(2) or ""
            base = re.sub(r"_(bucket|count|sum)$", "", series)
            assert base in METRICS, f"unknown metric {series} in {expr}"
            if series != base:
                assert base in HISTOGRAMS, f"{series}: {base} is not a histogram"
            labels = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", selector))
            assert labels <= METRICS[base], f"{series} has no label(s) {labels - METRICS[base]}"
        for by in re.findall(r"by \(([^)]*)\)", expr):
            used = {label.strip() for label in by.split(",")} - {"le"}
            metrics = {
                re.sub(r"_(bucket|count|sum)$", "", m)
                for m in re.findall(r"\b(video2mp3_[a-z_]+)\b", expr)
            }
            assert any(used <= METRICS[m] for m in metrics), f"grouping by {used} in {expr}"
        if "histogram_quantile" in expr:
            assert "_bucket" in expr, expr
            assert re.search(r"by \([^)]*\ble\b", expr), expr
        if re.search(r"_total\b(\{[^}]*\})?\[", expr) is None and "_total" in expr:
            raise AssertionError(f"a counter used without rate/increase: {expr}")
