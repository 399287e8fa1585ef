"""What the picker knows of each model server: the few metrics it scrapes, read fast.

A scrape answers every 50 ms per server, so the Prometheus text is not parsed whole: lines are
split once, and only the series of the names wanted are read (their values, and for the LoRA
and cache-config info series, their labels). ``python -m bench.scrape`` measures this reader
against ``prometheus_client``'s parser on the same exposition. Servers of several engines are
read through name presets (vLLM, SGLang, TensorRT-LLM), each name overridable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Engine presets: (waiting, running, kv cache usage 0-1, LoRA info, cache config info).
PRESETS: dict[str, tuple[str, str, str, str, str]] = {
    "vllm": (
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:lora_requests_info",
        "vllm:cache_config_info",
    ),
    "sglang": (
        "sglang:num_queue_reqs",
        "sglang:num_running_reqs",
        "sglang:token_usage",
        "",
        "sglang:cache_config_info",
    ),
    "trtllm": (
        "trtllm_num_requests_waiting",
        "trtllm_num_requests_running",
        "trtllm_kv_cache_utilization",
        "",
        "",
    ),
}


@dataclass(frozen=True, slots=True)
class MetricNames:
    """The series names one pool's servers expose ("" for a signal the engine has not)."""

    waiting: str
    running: str
    kv_cache: str
    lora_info: str = ""
    cache_config: str = ""

    @classmethod
    def preset(cls, engine: str, **overrides: str | None) -> MetricNames:
        """An engine's names with some replaced (None keeps the preset's)."""
        waiting, running, kv, lora, cache = PRESETS[engine]
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(
            given.get("waiting", waiting),
            given.get("running", running),
            given.get("kv_cache", kv),
            given.get("lora_info", lora),
            given.get("cache_config", cache),
        )


@dataclass(slots=True)
class Signals:
    """One server's latest scrape. ``at`` is the loop time of the scrape (0: never scraped)."""

    waiting: float = 0.0
    running: float = 0.0
    kv_cache: float = 0.0
    lora_running: frozenset[str] = frozenset()
    lora_waiting: frozenset[str] = frozenset()
    max_lora: int = 0
    block_size: int = 0  # tokens per KV block, 0 when unknown
    num_blocks: int = 0  # KV blocks on the server, 0 when unknown
    at: float = 0.0
    errors: int = 0  # scrapes failed in a row


class MetricsParseError(ValueError):
    """An exposition the reader cannot use (a wanted series with no number)."""


def read_signals(text: bytes, names: MetricNames, into: Signals) -> None:
    """Fill ``into`` from a Prometheus text exposition (several series of one name are summed,
    the KV use takes the largest, the LoRA info its newest sample)."""
    waiting = running = kv = 0.0
    lora_stamp = -math.inf
    wanted_waiting, wanted_running, wanted_kv = names.waiting, names.running, names.kv_cache
    wanted_lora, wanted_cache = names.lora_info, names.cache_config
    for line in text.split(b"\n"):
        if not line or line[0] == 35:  # b"#"
            continue
        brace = line.find(b"{")
        space = line.find(b" ")
        end = brace if brace != -1 and (space == -1 or brace < space) else space
        if end <= 0:
            continue
        name = line[:end].decode("ascii", "replace")
        if name == wanted_waiting:
            waiting += _value(line)
        elif name == wanted_running:
            running += _value(line)
        elif name == wanted_kv:
            kv = max(kv, _value(line))
        elif name == wanted_lora:
            stamp = _value(line)
            if stamp >= lora_stamp:
                lora_stamp = stamp
                labels = _labels(line, brace)
                into.lora_running = _csv(labels.get("running_lora_adapters", ""))
                into.lora_waiting = _csv(labels.get("waiting_lora_adapters", ""))
                into.max_lora = int(float(labels.get("max_lora", "0") or 0))
        elif name == wanted_cache:
            labels = _labels(line, brace)
            size = labels.get("block_size") or labels.get("page_size")
            blocks = labels.get("num_gpu_blocks") or labels.get("num_pages")
            if size and size.isdigit():
                into.block_size = int(size)
            if blocks and blocks.isdigit():
                into.num_blocks = int(blocks)
    into.waiting = waiting
    into.running = running
    into.kv_cache = kv


def _value(line: bytes) -> float:
    """The sample value: the first field after the series (a timestamp may follow)."""
    close = line.rfind(b"}")
    rest = line[close + 1 :] if close != -1 else line[line.find(b" ") :]
    parts = rest.split()
    if not parts:
        raise MetricsParseError(f"no value in {line[:80]!r}")
    try:
        return float(parts[0])
    except ValueError as exc:
        raise MetricsParseError(f"bad value in {line[:80]!r}") from exc


def _labels(line: bytes, brace: int) -> dict[str, str]:
    """The ``{name="value",...}`` labels of a series line (escapes \\" \\\\ \\n honoured)."""
    labels: dict[str, str] = {}
    if brace == -1:
        return labels
    text = line[brace + 1 : line.rfind(b"}")].decode("utf-8", "replace")
    pos = 0
    while pos < len(text):
        eq = text.find("=", pos)
        if eq == -1 or eq + 1 >= len(text) or text[eq + 1] != '"':
            break
        key = text[pos:eq].strip().lstrip(",").strip()
        value, pos = _quoted(text, eq + 2)
        labels[key] = value
        while pos < len(text) and text[pos] in ", ":
            pos += 1
    return labels


def _quoted(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            nxt = text[pos + 1]
            out.append("\n" if nxt == "n" else nxt)
            pos += 2
        elif char == '"':
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
    return "".join(out), pos


def _csv(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())
