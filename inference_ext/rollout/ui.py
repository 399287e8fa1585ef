"""``/ui/rollouts``: the rollout controller's status as an HTML page of server-rendered SVG charts.

Per rollout: a header (phase, step, canary weight, the model or route rule split, stable and
canary, failures, message), the canary's weight over time as a step line, and per metric the
canary's and stable's values over time with the limit as a dashed line when it is a fixed
number and each check's verdict as a coloured mark. The page reloads itself every few seconds
(``<meta http-equiv="refresh">``): no script, no front-end build.

The input is the controller's status JSON::

    {"rollouts": [{"name", "namespace", "phase", "step", "weight", "stable", "canary", "model",
                   "route", "rule", "failures", "message",
                   "history": [{"time", "weight",
                                "checks": [{"metric", "stable", "canary", "value", "limit",
                                            "verdict"}]}]}]}

A limit is drawn when it is one number, optionally after ``min``, ``max``, ``<=``, ``>=``, ``<``
or ``>`` and before ``ms`` or ``s`` (``"<= 500ms"``, ``"min 0.9"``); a relative one (``"1.5x
stable"``) is only named in the legend. A metric is shown in milliseconds when its limit has a
unit or its name says time (``latency``, ``ttft``, ``itl``, ``tpot``, ``duration``...).

Element ids are ``rollout-<r>``, ``series-<r>-weight``, ``chart-<r>-<m>`` and
``series-<r>-<m>-canary`` / ``-stable``, where ``<r>`` and ``<m>`` are the rollout's and the
metric's names with characters outside ``[A-Za-z0-9_.-]`` replaced by ``_`` (a repeated rollout
id gets ``-2``, ``-3``...). Everything read from the status is escaped.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from inference_ext.rollout.svg_chart import Chart, Marker, Point, Series, clock, render

REFRESH_SECONDS = 5
StatusSource = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# A metric measured in seconds is shown in milliseconds: by its name, or by its limit's unit.
_SECONDS_METRIC = re.compile(r"latency|ttft|itl|tpot|duration|seconds|time", re.IGNORECASE)
# A limit that is one fixed number, e.g. "0.9", ">= 0.9", "min 0.9", "<= 500ms", "max 2s".
_FIXED_LIMIT = re.compile(
    r"\s*(?:min|max|<=|>=|<|>|=)?\s*(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*(ms|s)?\s*",
    re.IGNORECASE,
)
_VERDICTS = ("pass", "fail", "inconclusive")

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
section.rollout { border-top: 1px solid #ccc; padding-top: .5em; margin-bottom: 2em; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; }
dl.summary dt { color: #666; }
.phase-progressing { color: #1f6feb; } .phase-succeeded { color: #1a7f37; }
.phase-failed { color: #cf222e; } .phase-paused, .phase-pending { color: #9a6700; }
svg.chart { display: block; margin: .5em 0 0; }
svg .axis { stroke: #444; fill: none; } svg .grid { stroke: #eee; }
svg .tick-mark { stroke: #444; } svg .tick { font-size: 11px; fill: #444; }
svg .series .line { fill: none; stroke-width: 2; }
svg .canary .line { stroke: #e8590c; } svg .canary .point { fill: #e8590c; }
svg .stable .line { stroke: #1c7ed6; } svg .stable .point { fill: #1c7ed6; }
svg .limit-line { stroke: #555; stroke-dasharray: 6 4; }
.pass { fill: #2f9e44; background: #2f9e44; } .fail { fill: #e03131; background: #e03131; }
.inconclusive { fill: #adb5bd; background: #adb5bd; }
.legend { font-size: 12px; color: #444; margin: 0 0 1em; }
.legend span { margin-right: 1em; } .swatch { display: inline-block; width: 10px; height: 10px; }
.swatch.canary { background: #e8590c; } .swatch.stable { background: #1c7ed6; }
p.empty { color: #666; font-style: italic; }
"""


def render_rollouts_page(status: Mapping[str, Any]) -> str:
    """The whole HTML page for the controller's status JSON."""
    rollouts = list(status.get("rollouts") or [])
    body = [_rollout(r, key) for r, key in zip(rollouts, _keys(rollouts), strict=True)]
    if not body:
        body = ['<p class="empty" id="no-rollouts">No rollouts.</p>']
    return "".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
            "<title>Rollouts</title>",
            f"<style>{_STYLE}</style></head><body><h1>Rollouts</h1>",
            *body,
            "</body></html>",
        ]
    )


def ui_endpoint(status_source: StatusSource) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint answering the page for ``status_source()`` (a mapping, or awaitable)."""

    async def endpoint(request: Request) -> Response:
        status = status_source()
        if inspect.isawaitable(status):
            status = await status
        return HTMLResponse(render_rollouts_page(status), headers={"cache-control": "no-store"})

    return endpoint


def _slug(name: object) -> str:
    return _ID_UNSAFE.sub("_", str(name)) or "_"


def _keys(rollouts: Iterable[Mapping[str, Any]]) -> list[str]:
    """Each rollout's id part: its slugged name, numbered when it repeats."""
    seen: dict[str, int] = {}
    keys = []
    for rollout in rollouts:
        key = _slug(rollout.get("name", ""))
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}-{seen[key]}")
    return keys


def _target(rollout: Mapping[str, Any]) -> tuple[str, str]:
    """What the rollout splits: a rewrite rule's incoming model, or an HTTPRoute rule."""
    if rollout.get("route"):
        return ("route rule", escape(f"{rollout['route']} {rollout.get('rule', '')}"))
    return ("model", escape(str(rollout.get("model", ""))))


def _rollout(rollout: Mapping[str, Any], key: str) -> str:
    name = f"{rollout.get('namespace', '')}/{rollout.get('name', '')}".lstrip("/")
    phase = str(rollout.get("phase", ""))
    history = list(rollout.get("history") or [])
    fields = [
        ("phase", f'<span class="phase-{_slug(phase.lower())}">{escape(phase)}</span>'),
        ("step", escape(str(rollout.get("step", "")))),
        ("canary weight", f"{escape(str(rollout.get('weight', '')))}%"),
        _target(rollout),
        ("stable", escape(str(rollout.get("stable", "")))),
        ("canary", escape(str(rollout.get("canary", "")))),
        ("failures", escape(str(rollout.get("failures", 0)))),
        ("message", escape(str(rollout.get("message", "")))),
    ]
    out = [
        f'<section class="rollout" id="rollout-{escape(key)}" aria-label="rollout {escape(name)}">',
        f"<h2>{escape(name)}</h2>",
        '<dl class="summary">',
        *(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in fields),
        "</dl>",
    ]
    if not history:
        out.append('<p class="empty">No data yet: the controller has recorded no step.</p>')
    else:
        out.append(_weight_chart(history, key, name))
        for metric in _metrics(history):
            out.append(_metric_chart(history, key, name, metric))
    out.append("</section>")
    return "".join(out)


def _metrics(history: Iterable[Mapping[str, Any]]) -> list[str]:
    """Metric names in order of first appearance."""
    names: dict[str, None] = {}
    for entry in history:
        for check in entry.get("checks") or ():
            names.setdefault(str(check.get("metric", "")), None)
    return list(names)


def _weight_chart(history: list[Mapping[str, Any]], key: str, name: str) -> str:
    points: list[Point] = [(float(e["time"]), _number(e.get("weight"))) for e in history]
    series = Series(f"series-{key}-weight", f"{name} canary weight", "canary", points, step=True)
    chart = Chart(
        f"chart-{key}-weight",
        f"{name}: canary weight (% of requests)",
        [series],
        format_value=lambda v: f"{v:g}%",
        y_ceiling=100.0,
    )
    legend = '<p class="legend"><span><i class="swatch canary"></i> canary weight</span></p>'
    return f"<h3>Canary weight</h3>{render(chart)}{legend}"


def _metric_chart(history: list[Mapping[str, Any]], key: str, name: str, metric: str) -> str:
    checks = [
        (float(entry["time"]), check)
        for entry in history
        for check in entry.get("checks") or ()
        if str(check.get("metric", "")) == metric
    ]
    limit_text = str(checks[-1][1].get("limit") or "")  # the latest: a limit may change
    limit, has_unit = _limit(limit_text)
    fmt = _milliseconds if has_unit or _SECONDS_METRIC.search(metric) else _plain
    canary: list[Point] = [(t, _number(c.get("canary"))) for t, c in checks]
    stable: list[Point] = [(t, _number(c.get("stable"))) for t, c in checks]
    markers = [_verdict(t, c, limit_text, fmt) for t, c in checks]
    m = _slug(metric)
    chart = Chart(
        f"chart-{key}-{m}",
        f"{name}: {metric}, canary against stable",
        [
            Series(f"series-{key}-{m}-stable", f"{metric} stable", "stable", stable),
            Series(f"series-{key}-{m}-canary", f"{metric} canary", "canary", canary),
        ],
        format_value=fmt,
        limit=limit,
        limit_label=f"limit {limit_text}",
        markers=markers,
    )
    legend = (
        '<p class="legend"><span><i class="swatch canary"></i> canary</span>'
        '<span><i class="swatch stable"></i> stable</span>'
        f"<span>- - limit {escape(limit_text) or 'none'}</span>"
        + "".join(f'<span><i class="swatch {v}"></i> {v}</span>' for v in _VERDICTS)
        + "</p>"
    )
    return f"<h3>{escape(metric)}</h3>{render(chart)}{legend}"


def _verdict(t: float, check: Mapping[str, Any], limit: str, fmt: Callable[[float], str]) -> Marker:
    """A check's verdict as a marker whose tooltip says what was compared."""
    verdict = str(check.get("verdict", ""))
    verdict = verdict if verdict in _VERDICTS else "inconclusive"

    def shown(field: str) -> str:
        value = _number(check.get(field))
        return "none" if value is None else fmt(value)

    label = (
        f"{clock(t)} {verdict}: canary {shown('canary')}, stable {shown('stable')}, "
        f"value {shown('value')}, limit {limit or 'none'}"
    )
    return Marker(t, verdict, label)


def _limit(text: str) -> tuple[float | None, bool]:
    """A fixed-number limit in the metric's own unit (seconds if it had one), and whether it did."""
    match = _FIXED_LIMIT.fullmatch(text)
    if match is None:
        return None, False
    value, unit = float(match.group(1)), (match.group(2) or "").lower()
    return (value / 1000 if unit == "ms" else value), bool(unit)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _milliseconds(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:,.0f} ms" if abs(ms) >= 100 else f"{ms:.3g} ms"


def _plain(value: float) -> str:
    return f"{value:.4g}"
