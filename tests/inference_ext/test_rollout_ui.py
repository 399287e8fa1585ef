"""``/ui/rollouts``: the page's charts parsed as XML, then served by the admin API to Chromium.

The status is a fixed synthetic one: the controller that produces it lives in another part of
issue 13, and the page is a pure function of the status JSON, whose shape is the contract.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from gateway.admin import create_admin_app, serve_admin
from gateway.plugins import PluginApi, PluginSpec
from gateway.reload import build_snapshot
from gateway.snapshot import SnapshotHolder
from inference_ext.rollout.svg_chart import nice_ticks, time_ticks
from inference_ext.rollout.ui import render_rollouts_page, ui_endpoint
from tests.fixtures.echo_process import gateway_yaml
from tests.fixtures.plugins import plugin_sandbox  # noqa: F401  (fixture)

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_765_000_000.0  # 2025-12-06 05:46:40 UTC
HOSTILE = "<script>alert('x')</script>&\""


def check(metric: str, stable: float | None, canary: float | None, limit: str, verdict: str):
    """One check of a history entry."""
    return {
        "metric": metric,
        "stable": stable,
        "canary": canary,
        "value": None if stable is None or canary is None else canary / stable,
        "limit": limit,
        "verdict": verdict,
    }


def rollout(name: str = "chat-v2", entries: int = 5, **fields: Any) -> dict[str, Any]:
    """A progressing rollout whose history has ``entries`` steps 10 s apart."""
    weights = [5, 5, 10, 10, 20, 20, 50, 50]
    history = [
        {
            "time": T0 + 10 * i,
            "weight": weights[i % len(weights)],
            "checks": [
                check("ttft_p90", 0.2 + 0.01 * i, 0.25 + 0.02 * i, "<= 500ms", "pass"),
                check("agreement", None, 0.95 - 0.02 * i, "min 0.9", "pass" if i < 3 else "fail"),
                check("error_rate", 0.01, None if i == 2 else 0.02, "1.5x stable", "inconclusive"),
            ],
        }
        for i in range(entries)
    ]
    return {
        "name": name,
        "namespace": "default",
        "phase": "Progressing",
        "step": 2,
        "weight": 20,
        "stable": "pool-v1",
        "canary": "pool-v2",
        "model": "chat",
        "failures": 0,
        "message": "step 2 of 4",
        "history": history,
        **fields,
    }


def charts(page: str) -> dict[str, ET.Element]:
    """Every ``<svg>`` of the page, parsed as XML (so each is well-formed), by id."""
    found = [ET.fromstring(svg) for svg in re.findall(r"<svg .*?</svg>", page, re.DOTALL)]
    return {svg.attrib["id"]: svg for svg in found}


def series(svg: ET.Element, series_id: str) -> ET.Element:
    """The ``<g>`` of one series."""
    (group,) = [g for g in svg.iter(f"{SVG}g") if g.get("id") == series_id]
    return group


def limits(svg: ET.Element) -> list[ET.Element]:
    """The chart's limit lines (a ``<g class="limit">`` each)."""
    return [g for g in svg.iter(f"{SVG}g") if g.get("class") == "limit"]


def points(group: ET.Element) -> list[tuple[float, float]]:
    """A series' points as (time, value), from the circles' data attributes."""
    return [
        (float(c.attrib["data-time"]), float(c.attrib["data-value"]))
        for c in group.iter(f"{SVG}circle")
    ]


class _Text(HTMLParser):
    """The page's visible text and every element's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Text:
    """The page through ``html.parser``."""
    parser = _Text()
    parser.feed(page)
    parser.close()
    return parser


def test_one_chart_per_metric_and_a_point_per_history_entry() -> None:
    page = render_rollouts_page({"rollouts": [rollout(entries=5)]})
    svgs = charts(page)
    assert list(svgs) == [
        "chart-chat-v2-weight",
        "chart-chat-v2-ttft_p90",
        "chart-chat-v2-agreement",
        "chart-chat-v2-error_rate",
    ]
    weight = points(series(svgs["chart-chat-v2-weight"], "series-chat-v2-weight"))
    assert weight == [(T0 + 10 * i, w) for i, w in enumerate([5, 5, 10, 10, 20])]
    ttft = svgs["chart-chat-v2-ttft_p90"]
    canary = points(series(ttft, "series-chat-v2-ttft_p90-canary"))
    stable = points(series(ttft, "series-chat-v2-ttft_p90-stable"))
    assert len(canary) == len(stable) == 5
    assert [v for _, v in canary] == pytest.approx([0.25 + 0.02 * i for i in range(5)])
    assert [v for _, v in stable] == pytest.approx([0.2 + 0.01 * i for i in range(5)])


def test_series_are_labelled_for_people_and_screen_readers() -> None:
    svg = charts(render_rollouts_page({"rollouts": [rollout()]}))["chart-chat-v2-ttft_p90"]
    assert svg.get("aria-label") == "default/chat-v2: ttft_p90, canary against stable"
    group = series(svg, "series-chat-v2-ttft_p90-canary")
    assert group.get("aria-label") == "ttft_p90 canary"
    assert group.findtext(f"{SVG}title") == "ttft_p90 canary"
    first = next(group.iter(f"{SVG}circle"))
    assert first.findtext(f"{SVG}title") == "ttft_p90 canary at 05:46:40: 250 ms"


def test_the_weight_is_a_step_line_and_nulls_leave_gaps() -> None:
    svgs = charts(render_rollouts_page({"rollouts": [rollout(entries=5)]}))
    weight_line = series(svgs["chart-chat-v2-weight"], "series-chat-v2-weight").find(f"{SVG}path")
    assert weight_line is not None
    assert re.fullmatch(r"M[\d.,]+(H[\d.]+V[\d.]+){4}", weight_line.attrib["d"])
    errors = series(svgs["chart-chat-v2-error_rate"], "series-chat-v2-error_rate-canary")
    assert len(points(errors)) == 4  # entry 2 had no canary value
    line = errors.find(f"{SVG}path")
    assert line is not None and line.attrib["d"].count("M") == 2
    no_stable = series(svgs["chart-chat-v2-agreement"], "series-chat-v2-agreement-stable")
    assert points(no_stable) == []


def test_fixed_limits_are_dashed_lines_in_the_metrics_unit() -> None:
    svgs = charts(render_rollouts_page({"rollouts": [rollout()]}))
    ttft = svgs["chart-chat-v2-ttft_p90"]
    ticks = [t.text or "" for t in ttft.iter(f"{SVG}text")]
    y_ticks = [t for t in ticks if not re.fullmatch(r"\d\d:\d\d:\d\d", t)]
    assert y_ticks == ["0 ms", "200 ms", "400 ms", "600 ms"]  # seconds are shown in ms
    (limit,) = limits(ttft)
    assert limit.get("aria-label") == "limit <= 500ms"
    (zero, *_, top) = [t for t in ttft.iter(f"{SVG}text") if t.text in ("0 ms", "600 ms")]
    line = limit.find(f"{SVG}path")
    assert line is not None
    y = float(line.attrib["d"].split(",")[1].split("H")[0])
    low, high = float(zero.attrib["y"]) - 4, float(top.attrib["y"]) - 4  # text sits 4 px lower
    assert y == pytest.approx(low + (high - low) * 500 / 600, abs=0.1)
    assert [g.get("aria-label") for g in limits(svgs["chart-chat-v2-agreement"])] == [
        "limit min 0.9"
    ]
    assert limits(svgs["chart-chat-v2-error_rate"]) == []  # "1.5x stable" is no fixed number


def test_time_ticks_are_clock_times_inside_the_history() -> None:
    svg = charts(render_rollouts_page({"rollouts": [rollout(entries=8)]}))["chart-chat-v2-weight"]
    clocks = [t.text for t in svg.iter(f"{SVG}text") if re.fullmatch(r"\d\d:\d\d:\d\d", t.text)]
    assert clocks == ["05:46:45", "05:47:00", "05:47:15", "05:47:30", "05:47:45"]  # 70 s: 15 s
    assert time_ticks(T0, T0 + 3) == [T0, T0 + 1, T0 + 2, T0 + 3]
    quarter_hours = [T0 - 100 + 900 * i for i in range(1, 5)]
    assert time_ticks(T0 - 1, T0 + 3600) == quarter_hours
    assert nice_ticks(0, 0.33) == [0, 0.1, 0.2, 0.3, 0.4]
    assert nice_ticks(5, 5) == [5, 5.5, 6]


def test_verdicts_are_coloured_marks_in_time_order() -> None:
    svgs = charts(render_rollouts_page({"rollouts": [rollout(entries=5)]}))
    (marks,) = [
        g
        for g in svgs["chart-chat-v2-agreement"].iter(f"{SVG}g")
        if g.get("id") == "chart-chat-v2-agreement-verdicts"
    ]
    rects = list(marks.iter(f"{SVG}rect"))
    assert [r.attrib["class"] for r in rects] == ["verdict pass"] * 3 + ["verdict fail"] * 2
    assert rects[3].findtext(f"{SVG}title") == (
        "05:47:10 fail: canary 0.89, stable none, value none, limit min 0.9"
    )


def test_text_from_the_config_is_escaped() -> None:
    hostile = rollout(
        name=HOSTILE,
        message=HOSTILE,
        phase=HOSTILE,
        history=[{"time": T0, "weight": 5, "checks": [check(HOSTILE, 1, 2, HOSTILE, "pass")]}],
    )
    page = render_rollouts_page({"rollouts": [hostile]})
    assert "<script>" not in page and "alert('x')" not in page
    assert page.count("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;") >= 5
    parsed = parse(page)
    assert not [tag for tag, _ in parsed.elements if tag == "script"]
    assert f"default/{HOSTILE}" in "".join(parsed.text)  # what people see is the name as is
    key = "_script_alert__x____script___"
    svgs = charts(page)  # every chart still well-formed XML
    assert set(svgs) == {f"chart-{key}-weight", f"chart-{key}-{key}"}
    assert len(points(series(svgs[f"chart-{key}-{key}"], f"series-{key}-{key}-canary"))) == 1


def test_a_route_rule_rollout_names_the_rule_instead_of_a_model() -> None:
    route = rollout(model="", route="default/llm-route", rule="versions")
    text = "".join(parse(render_rollouts_page({"rollouts": [route, rollout()]})).text)
    assert "route rule" in text and "default/llm-route versions" in text
    assert text.count("model") == 1  # the rewrite rollout's own


def test_repeated_names_get_distinct_ids() -> None:
    page = render_rollouts_page({"rollouts": [rollout(), rollout(namespace="other")]})
    ids = [attrs.get("id") for tag, attrs in parse(page).elements if tag == "section"]
    assert ids == ["rollout-chat-v2", "rollout-chat-v2-2"]
    assert "series-chat-v2-2-ttft_p90-canary" in page


def test_empty_history_and_no_rollouts_say_so() -> None:
    page = render_rollouts_page({"rollouts": [rollout(entries=0)]})
    assert "No data yet" in page and not charts(page)
    assert "Progressing" in page and "pool-v2" in page  # the header is there all the same
    for status in ({"rollouts": []}, {}):
        page = render_rollouts_page(status)
        assert 'id="no-rollouts"' in page and "No rollouts." in page and "<svg" not in page


def test_the_page_refreshes_itself_without_script() -> None:
    parsed = parse(render_rollouts_page({"rollouts": [rollout()]}))
    metas = [a for tag, a in parsed.elements if tag == "meta" and "http-equiv" in a]
    assert metas == [{"http-equiv": "refresh", "content": "5"}]
    assert not [tag for tag, _ in parsed.elements if tag == "script"]


@pytest.fixture
async def admin_url(
    plugin_sandbox: None,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> AsyncIterator[str]:
    """The gateway's admin API with the page registered at ``/ui/rollouts`` (async source)."""
    calls: list[int] = []

    async def status() -> Mapping[str, Any]:
        calls.append(1)
        return {"rollouts": [rollout(entries=5), rollout(HOSTILE, entries=0)]}

    PluginApi(PluginSpec("rollouts", "tests:register", "tests")).ui_page(
        "rollouts", ui_endpoint(status)
    )
    config = tmp_path / "gw.yaml"
    config.write_text(gateway_yaml(1))
    holder = SnapshotHolder(build_snapshot([str(config)], version=1))
    server = await serve_admin(create_admin_app(holder, lambda: b"", lambda: True), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.port}/ui/rollouts"
    finally:
        await server.close()
    assert calls, "the status source was never asked"


async def test_the_admin_api_serves_the_page_at_ui_rollouts(admin_url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(admin_url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert "series-chat-v2-ttft_p90-canary" in response.text


async def test_a_plain_function_may_be_the_status_source() -> None:
    endpoint = ui_endpoint(lambda: {"rollouts": [rollout(entries=1)]})
    response = await endpoint(Request({"type": "http", "method": "GET", "headers": []}))
    assert response.status_code == 200 and response.media_type == "text/html"
    assert b'id="series-chat-v2-ttft_p90-canary"' in response.body


async def chromium(*args: str) -> str:
    """Run headless Chromium (bounded to 60 s) and return its stdout."""
    binary = shutil.which("chromium")
    assert binary is not None
    process = await asyncio.create_subprocess_exec(
        binary,
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # loopback only
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode()


needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)",
)


@needs_chromium
async def test_chromium_renders_the_series_and_a_screenshot(admin_url: str, tmp_path: Path) -> None:
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    dom = await chromium(profile, "--dump-dom", admin_url)
    parsed = parse(dom)
    ids = {attrs.get("id") for _, attrs in parsed.elements}
    for metric in ("ttft_p90", "agreement", "error_rate"):
        assert {f"series-chat-v2-{metric}-canary", f"series-chat-v2-{metric}-stable"} <= ids
    assert "series-chat-v2-weight" in ids
    circles = [a for tag, a in parsed.elements if tag == "circle" and a.get("class") == "point"]
    assert len(circles) == 5 + 2 * 5 + 5 + 2 * 5 - 1  # weight, ttft, agreement, error_rate
    text = "".join(parsed.text)
    assert "default/chat-v2" in text and f"default/{HOSTILE}" in text and "No data yet" in text
    assert not [tag for tag, _ in parsed.elements if tag == "script"]  # the hostile name is text

    png = tmp_path / "rollouts.png"
    await chromium(profile, "--window-size=900,1400", f"--screenshot={png}", admin_url)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000  # a heading and a line of text at 900x1400 make ~11 KB
