"""Provider health (back-off and ejection) and the usage meter, alone."""

from __future__ import annotations

import gzip
import signal

import orjson

from agentgw.llm.upstream import ProviderHealth
from agentgw.llm.usage import Usage, UsageMeter
from tests.fixtures.llm_providers import StandIn, serve, stop


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ejection_doubles_while_a_provider_keeps_failing_and_resets_on_success() -> None:
    clock = Clock()
    health = ProviderHealth(eject_after=2, ejection=5.0, max_ejection=12.0, clock=clock)
    health.failed("p")
    assert health.available("p")
    health.failed("p")
    assert not health.available("p")  # ejected for 5 s
    clock.now = 5.0
    assert health.available("p")
    health.failed("p")
    health.failed("p")
    assert not health.available("p")
    clock.now = 14.9  # 10 s this time
    assert not health.available("p")
    clock.now = 15.0
    assert health.available("p")
    health.failed("p")
    health.failed("p")
    clock.now = 26.9  # capped at 12 s
    assert not health.available("p")
    clock.now = 27.0
    health.succeeded("p")
    health.failed("p")
    assert health.available("p")  # one failure after a success: the count started over


def test_retry_after_backs_off_without_ejecting() -> None:
    clock = Clock()
    health = ProviderHealth(clock=clock)
    health.failed("p", retry_after=30)
    assert not health.available("p") and health.available("q")
    clock.now = 30.0
    assert health.available("p")
    assert health.describe() == {}


def test_the_meter_reads_usage_through_gzip_and_from_anthropic_events() -> None:
    body = orjson.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    packed = gzip.compress(body)
    meter = UsageMeter(streaming=False, encoding="gzip")
    for at in range(0, len(packed), 4):
        meter.feed(packed[at : at + 4])
    assert (meter.tokens.input, meter.tokens.output) == (5, 3)
    stream = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
        b'{"input_tokens":9,"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":6}}\n\n'
    )
    meter = UsageMeter(streaming=True)
    meter.feed(stream)
    assert (meter.tokens.input, meter.tokens.output) == (9, 6)
    assert UsageMeter(streaming=False, encoding="br").tokens == Usage()  # unreadable: not guessed


async def test_provider_stand_ins_leave_the_signal_handlers_as_they_found_them() -> None:
    # Stopped in the order they started, uvicorn servers would leave the first one's handler
    # installed, and sse_starlette (the MCP SDK's server) would then end every later stream.
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    first, second = await serve(StandIn("openai")), await serve(StandIn("anthropic"))
    await stop(first)
    await stop(second)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
