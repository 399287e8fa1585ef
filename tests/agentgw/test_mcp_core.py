"""The MCP federation's sans-IO parts: JSON-RPC classification, names and ids, merging, sealing."""

from __future__ import annotations

import pytest

from agentgw.mcp import jsonrpc
from agentgw.mcp.jsonrpc import Kind, RpcError
from agentgw.mcp.merge import merge_initialize, merge_list
from agentgw.mcp.names import IdError, Naming, downstream_id, upstream_id, valid_name
from agentgw.mcp.sealing import Sealer, SessionError, SessionState, derive_key


def test_messages_are_classified() -> None:
    request = jsonrpc.parse(b'{"jsonrpc":"2.0","id":0,"method":"tools/list"}')
    assert (request.kind, request.id, request.method) == (Kind.REQUEST, 0, "tools/list")
    note = jsonrpc.parse(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert note.kind is Kind.NOTIFICATION and note.params == {}
    answer = jsonrpc.parse(b'{"jsonrpc":"2.0","id":"a/n/1","result":{}}')
    assert answer.kind is Kind.RESPONSE and answer.id == "a/n/1"


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"nope", jsonrpc.PARSE_ERROR, "the body is not JSON"),
        (b"[{}]", jsonrpc.INVALID_REQUEST, "batches are not supported"),
        (b'{"jsonrpc":"1.0","id":1}', jsonrpc.INVALID_REQUEST, "not a JSON-RPC 2.0 message"),
        (b'{"jsonrpc":"2.0","id":true,"method":"x"}', jsonrpc.INVALID_REQUEST, "id: expected"),
        (b'{"jsonrpc":"2.0","id":null,"method":"x"}', jsonrpc.INVALID_REQUEST, "must not be null"),
        (b'{"jsonrpc":"2.0","id":1,"method":""}', jsonrpc.INVALID_REQUEST, "method: expected"),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}', jsonrpc.INVALID_REQUEST, "params"),
        (b'{"jsonrpc":"2.0","id":1}', jsonrpc.INVALID_REQUEST, "exactly one of result and error"),
    ],
)
def test_bad_messages_are_refused_naming_the_problem(body: bytes, code: int, message: str) -> None:
    with pytest.raises(RpcError) as raised:
        jsonrpc.parse(body)
    assert raised.value.code == code and raised.value.status == 400
    assert message in raised.value.message


def test_names_follow_the_prefix_mode_and_the_128_rule() -> None:
    two = ("weather", "files")
    assert Naming.of(two, "Conditional").expose("weather", "echo") == "weather_echo"
    assert Naming.of(("files",), "Conditional").expose("files", "echo") == "echo"
    assert Naming.of(("files",), "Always").expose("files", "echo") == "files_echo"
    assert Naming.of(two, "Never").expose("files", "echo") == "echo"
    prefixed = Naming.of(two, "Always")
    assert prefixed.expose("files", "x" * 122) == "files_" + "x" * 122  # 128
    assert prefixed.expose("files", "x" * 123) is None
    assert prefixed.expose("files", "has space") is None
    assert valid_name("a.b-c_D9") and not valid_name("") and not valid_name("é")


def test_uris_are_namespaced_and_route_back() -> None:
    naming = Naming.of(("weather", "files"), "Conditional")
    assert naming.expose_uri("files", "file:///a+b") == "files+file:///a+b"
    assert naming.owner_uri("files+file:///a+b") == ("files", "file:///a+b")
    assert naming.owner_uri("other+x://y") is None
    assert naming.owner_uri("file:///plain") is None
    sole = Naming.of(("files",), "Conditional")
    assert sole.owner_uri("file:///plain") == ("files", "file:///plain")


@pytest.mark.parametrize("original", [0, 17, -3, "abc", "1", "a/b/c", ""])
def test_request_ids_round_trip_with_their_type(original: int | str) -> None:
    assert upstream_id(downstream_id("weather", original)) == ("weather", original)


@pytest.mark.parametrize("foreign", [5, None, "weather", "weather/x/1", "weather/n/abc", "/n/1"])
def test_foreign_ids_are_refused(foreign: int | str | None) -> None:
    with pytest.raises(IdError):
        upstream_id(foreign)


def test_initialize_results_merge() -> None:
    merged = merge_initialize(
        "ns/tools",
        "2025-06-18",
        [
            (
                "a",
                {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {"tools": {"listChanged": False}, "logging": {}},
                    "instructions": "Use a.",
                },
            ),
            (
                "b",
                {
                    "protocolVersion": "2025-03-26",
                    "capabilities": {"tools": {"listChanged": True}, "resources": {}},
                },
            ),
        ],
    )
    assert merged == {
        "protocolVersion": "2025-03-26",
        "capabilities": {"tools": {"listChanged": True}, "logging": {}, "resources": {}},
        "serverInfo": {"name": "ns/tools", "version": "ambient-gateway"},
        "instructions": "[a] Use a.",
    }


def test_lists_merge_renamed_with_what_was_left_out() -> None:
    naming = Naming.of(("a", "b"), "Never")
    merged = merge_list(
        "tools/list",
        naming,
        [("a", [{"name": "x"}, {"name": "y"}]), ("b", [{"name": "x"}, {"title": "no name"}])],
        allowed=lambda target, original, exposed: original != "y",
    )
    assert merged.items == [{"name": "x"}]
    assert merged.owners == {"x": ("a", "x")}
    assert merged.omitted == [
        "b: tool 'x' duplicates the one of target a",
        "b: a tool without 'name'",
    ]


def test_sealed_sessions_open_only_with_their_key_and_backend() -> None:
    key = derive_key(b"secret")
    sealer = Sealer(key, b"ns/tools")
    state = SessionState(
        "2025-06-18", (("a", "sid-1"), ("b", None)), {"capabilities": {}}, 12, "al"
    )
    sealed = sealer.seal(state)
    assert all(33 <= ord(c) <= 126 for c in sealed)
    assert sealer.open(sealed) == state
    assert Sealer(derive_key(b"secret"), b"ns/tools").open(sealed) == state  # another replica
    assert sealer.seal(state) != sealed  # a fresh nonce each time
    for other in (Sealer(key, b"ns/other"), Sealer(derive_key(b"other"), b"ns/tools")):
        with pytest.raises(SessionError):
            other.open(sealed)
    for forged in ("", "!!", sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]):
        with pytest.raises(SessionError):
            sealer.open(forged)
    assert state.upstream("a") == "sid-1" and state.upstream("b") is None
    assert state.targets == ("a", "b")
