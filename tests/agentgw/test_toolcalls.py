"""The tool calls an answer asks for, read from both formats whole and streamed, and the ledger
that keeps them for the MCP call that carries one out: claimed once, by the same caller with the
same arguments, forgotten after its time or when the ledger is full, and shared by the workers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import orjson

from agentgw.llm.asked_tools import ToolCallReader
from agentgw.toolcalls import AskedCall, ToolCallLedger, caller_of, canonical
from mesh.identity.spiffe import SpiffeId

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_openai_tool_calls_whole_and_in_stream_fragments() -> None:
    whole = ToolCallReader()
    whole.answer(
        {
            "choices": [
                {
                    "message": {
                        "tool_calls": [
                            {"id": "call_1", "function": {"name": "w", "arguments": '{"c": 1}'}},
                            {"id": "call_2", "function": {"name": "x", "arguments": "{}"}},
                        ]
                    }
                }
            ]
        }
    )
    assert whole.calls() == [("call_1", "w", '{"c": 1}'), ("call_2", "x", "{}")]
    streamed = ToolCallReader()
    head = {"index": 0, "id": "call_1", "function": {"name": "w", "arguments": ""}}
    for delta in (
        {"tool_calls": [head]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"c"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
    ):
        streamed.event({"choices": [{"index": 0, "delta": delta}]})
    assert streamed.calls() == [("call_1", "w", '{"c": 1}')]


def test_anthropic_tool_use_whole_and_in_stream_fragments() -> None:
    whole = ToolCallReader()
    whole.answer(
        {
            "content": [
                {"type": "text"},
                {"type": "tool_use", "id": "t1", "name": "w", "input": {"c": 1}},
            ]
        }
    )
    assert whole.calls() == [("t1", "w", {"c": 1})]
    streamed = ToolCallReader()
    streamed.event(
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t1", "name": "w", "input": {}},
        }
    )
    for part in ('{"c":', " 1}"):
        delta = {"type": "input_json_delta", "partial_json": part}
        streamed.event({"type": "content_block_delta", "index": 1, "delta": delta})
    assert streamed.calls() == [("t1", "w", '{"c": 1}')]


def test_a_call_is_claimed_once_by_the_same_caller_with_the_same_arguments() -> None:
    ledger = ToolCallLedger()
    ledger.remember("agent:a", "weather", '{"city": "Paris", "days": 2}', "call_1", PARENT)
    assert ledger.claim("agent:b", "weather", {"city": "Paris", "days": 2}) is None
    assert ledger.claim("agent:a", "weather", {"city": "Lyon", "days": 2}) is None
    asked = ledger.claim("agent:a", "weather", {"days": 2, "city": "Paris"})  # keys reordered
    assert asked is not None and (asked.call_id, asked.traceparent) == ("call_1", PARENT)
    assert ledger.claim("agent:a", "weather", {"days": 2, "city": "Paris"}) is None
    assert len(ledger) == 0


def test_calls_are_forgotten_after_their_time_or_when_the_ledger_is_full() -> None:
    now = [100.0]
    ledger = ToolCallLedger(ttl=10, capacity=2, clock=lambda: now[0])
    ledger.remember("agent:a", "t", {}, "old", PARENT)
    now[0] += 11
    assert ledger.claim("agent:a", "t", {}) is None
    for n in range(3):
        ledger.remember("agent:a", f"t{n}", {}, f"c{n}", PARENT)
    assert len(ledger) == 2
    assert ledger.claim("agent:a", "t0", {}) is None  # the oldest went first
    assert ledger.claim("agent:a", "t2", {}) is not None


def test_the_caller_is_the_agent_header_a_digest_of_the_credential_or_the_mesh_peer() -> None:
    assert caller_of({"x-agent-id": "planner"}) == "agent:planner"
    bearer = caller_of({"authorization": "Bearer sk-1"})
    assert bearer is not None and bearer == caller_of({"x-api-key": "sk-1"})
    assert "sk-1" not in bearer
    assert caller_of({}) is None
    # Over the mesh, a request with no agent id or credential is its peer's SPIFFE id.
    sleep = SpiffeId("cluster.local", "default", "sleep")
    assert caller_of({}, sleep) == "peer:spiffe://cluster.local/ns/default/sa/sleep"
    assert caller_of({"x-agent-id": "planner"}, sleep) == "agent:planner"
    assert canonical('{"b": 1, "a": 2}') == orjson.dumps({"a": 2, "b": 1}).decode()
    assert canonical("not json") == "not json"


def _remember_in_another_process(path: str) -> None:
    ledger = ToolCallLedger()
    ledger.attach(path)
    ledger.remember("agent:a", "weather", {"city": "Paris"}, "call_9", PARENT)
    ledger.detach()


def test_workers_share_the_ledger_a_call_remembered_by_one_is_claimed_by_another(
    tmp_path: Path,
) -> None:
    """The admin process makes the file; a worker relays the answer (remembers) and another
    serves the tool call (claims): two processes, one ledger."""
    path = str(tmp_path / "ledger")
    ledger = ToolCallLedger()
    ledger.create(path)
    ledger.attach(path)
    worker = multiprocessing.get_context("fork").Process(
        target=_remember_in_another_process, args=(path,)
    )
    worker.start()
    worker.join(30)
    assert worker.exitcode == 0
    asked = ledger.claim("agent:a", "weather", {"city": "Paris"})
    assert asked is not None and (asked.call_id, asked.traceparent) == ("call_9", PARENT)
    assert ledger.claim("agent:a", "weather", {"city": "Paris"}) is None
    ledger.detach()


def test_an_id_too_long_to_keep_is_not_remembered() -> None:
    ledger = ToolCallLedger()
    ledger.remember("agent:a", "t", {}, "x" * 97, PARENT)
    assert len(ledger) == 0
    ledger.remember("agent:a", "t", {}, "x" * 96, PARENT)
    assert ledger.claim("agent:a", "t", {}) == AskedCall("x" * 96, PARENT)
