"""Line charts as inline SVG text: time on x, one value per point on y, no charting library.

A chart is data (:class:`Chart`, :class:`Series`, :class:`Marker`) rendered by :func:`render` into
an ``<svg>`` element for an HTML page. Each series is a ``<g>`` with an ``id``, an ``aria-label``
and a ``<title>``, holding its line (a ``<path>``, straight or stepped) and one ``<circle
class="point">`` per point with a tooltip, so a test or a screen reader can count and read them.
Every text that reaches the markup is escaped here; callers pass plain strings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

# Time steps a tick may be apart, in seconds: round wall-clock intervals.
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 64, 32, 14, 34

Point = tuple[float, float | None]  # (unix time, value); None leaves a gap in the line


@dataclass(frozen=True, slots=True)
class Series:
    """One line: its element id, a label for people, a CSS class and its points in time order."""

    id: str
    label: str
    css_class: str
    points: Sequence[Point]
    step: bool = False  # a value holds until the next point (a weight set at a step)


@dataclass(frozen=True, slots=True)
class Marker:
    """A coloured mark at a time along the top of the plot (e.g. a check's verdict)."""

    time: float
    css_class: str
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart: id, title, series, an optional horizontal limit line, markers, value format."""

    id: str
    title: str
    series: Sequence[Series]
    format_value: Callable[[float], str] = field(default=lambda v: f"{v:g}")
    limit: float | None = None
    limit_label: str = ""
    markers: Sequence[Marker] = ()
    y_floor: float | None = 0.0  # the y axis starts at or below this value when set
    y_ceiling: float | None = None  # and ends at or above this one


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart) covering low..high."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(round((last - first) / step) + 1)]


def time_ticks(start: float, end: float, count: int = 5) -> list[float]:
    """Tick times on round wall-clock seconds, at most about ``count`` of them, within the range."""
    span = max(end - start, 1.0)
    step = next((s for s in _TIME_STEPS if span / s <= count), _TIME_STEPS[-1])
    first = math.ceil(start / step) * step
    return [float(first + i * step) for i in range(int((end - first) // step) + 1)]


def clock(unix: float) -> str:
    """``HH:MM:SS`` of a unix time, in UTC (the page is rendered on a server with no viewer)."""
    return time.strftime("%H:%M:%S", time.gmtime(unix))


class _Frame:
    """Maps data to pixels inside the plot area."""

    def __init__(self, width: int, height: int, xs: tuple[float, float], ys: list[float]) -> None:
        self.left, self.right = _MARGIN_LEFT, width - _MARGIN_RIGHT
        self.top, self.bottom = _MARGIN_TOP, height - _MARGIN_BOTTOM
        self.x0, self.x1 = xs
        self.y0, self.y1 = ys[0], ys[-1]

    def x(self, t: float) -> float:
        return self.left + (t - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def y(self, v: float) -> float:
        return self.bottom - (v - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)


def _bounds(chart: Chart) -> tuple[tuple[float, float], list[float]]:
    """The x range and the y ticks (whose first and last are the y range)."""
    times = [t for s in chart.series for t, _ in s.points] + [m.time for m in chart.markers]
    values = [v for s in chart.series for _, v in s.points if v is not None]
    values += [v for v in (chart.limit, chart.y_floor, chart.y_ceiling) if v is not None]
    start, end = (min(times), max(times)) if times else (0.0, 1.0)
    if end - start < 1.0:  # one point, or several within a second: a one-second window
        end = start + 1.0
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    return (start, end), nice_ticks(low, high)


def _path(series: Series, frame: _Frame) -> str:
    """The ``d`` of a series' line: a move at the start and after each gap."""
    parts: list[str] = []
    previous: float | None = None
    for t, v in series.points:
        if v is None:
            previous = None
            continue
        x, y = frame.x(t), frame.y(v)
        if previous is None:
            parts.append(f"M{x:.1f},{y:.1f}")
        elif series.step:
            parts.append(f"H{x:.1f}V{y:.1f}")
        else:
            parts.append(f"L{x:.1f},{y:.1f}")
        previous = v
    return "".join(parts)


def _axes(chart: Chart, frame: _Frame, y_ticks: list[float]) -> list[str]:
    out = [
        f'<g class="axes" aria-hidden="true"><path class="axis" d="M{frame.left},{frame.top}'
        f'V{frame.bottom}H{frame.right}"/>'
    ]
    for value in y_ticks:
        y = frame.y(value)
        out.append(
            f'<path class="grid" d="M{frame.left},{y:.1f}H{frame.right}"/>'
            f'<text class="tick" x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(chart.format_value(value))}</text>"
        )
    for t in time_ticks(frame.x0, frame.x1):
        x = frame.x(t)
        out.append(
            f'<path class="tick-mark" d="M{x:.1f},{frame.bottom}v4"/>'
            f'<text class="tick" x="{x:.1f}" y="{frame.bottom + 16}" text-anchor="middle">'
            f"{clock(t)}</text>"
        )
    out.append("</g>")
    return out


def _series(chart: Chart, series: Series, frame: _Frame) -> list[str]:
    label = escape(series.label)
    out = [
        f'<g id="{escape(series.id)}" class="series {escape(series.css_class)}" '
        f'role="list" aria-label="{label}"><title>{label}</title>',
        f'<path class="line" d="{_path(series, frame)}"/>',
    ]
    for t, v in series.points:
        if v is None:
            continue
        tip = escape(f"{series.label} at {clock(t)}: {chart.format_value(v)}")
        out.append(
            f'<circle class="point" role="listitem" cx="{frame.x(t):.1f}" cy="{frame.y(v):.1f}" '
            f'r="3" data-time="{t:.3f}" data-value="{v!r}"><title>{tip}</title></circle>'
        )
    out.append("</g>")
    return out


def _limit(chart: Chart, frame: _Frame) -> list[str]:
    if chart.limit is None:
        return []
    y = frame.y(chart.limit)
    label = escape(chart.limit_label or f"limit {chart.format_value(chart.limit)}")
    return [
        f'<g class="limit" aria-label="{label}"><title>{label}</title>'
        f'<path class="limit-line" d="M{frame.left},{y:.1f}H{frame.right}"/></g>'
    ]


def _markers(chart: Chart, frame: _Frame) -> list[str]:
    if not chart.markers:
        return []
    out = [f'<g id="{escape(chart.id)}-verdicts" class="verdicts" aria-label="verdicts">']
    for marker in chart.markers:
        x = frame.x(marker.time)
        out.append(
            f'<rect class="verdict {escape(marker.css_class)}" x="{x - 3:.1f}" '
            f'y="{frame.top - 10}" width="6" height="6">'
            f"<title>{escape(marker.label)}</title></rect>"
        )
    out.append("</g>")
    return out


def render(chart: Chart, width: int = 640, height: int = 200) -> str:
    """The chart as an ``<svg>`` element sized ``width`` x ``height`` CSS pixels."""
    xs, y_ticks = _bounds(chart)
    frame = _Frame(width, height, xs, y_ticks)
    title = escape(chart.title)
    parts = [
        f'<svg id="{escape(chart.id)}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="group" '
        f'aria-label="{title}"><title>{title}</title>',
        *_axes(chart, frame, y_ticks),
        *_limit(chart, frame),
    ]
    for series in chart.series:
        parts += _series(chart, series, frame)
    parts += _markers(chart, frame)
    parts.append("</svg>")
    return "".join(parts)
