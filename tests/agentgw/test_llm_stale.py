"""A provider that closes a connection without answering (as a server does when its keep-alive
timer and a new request cross): the gateway sends the request once more, on a new connection.
The provider is a raw loopback stand-in for the hosted OpenAI API."""

from __future__ import annotations

import asyncio

import httpx

from tests.fixtures.llm_gateway import StartLlm

ANSWER = (
    b'{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":'
    b'[{"index":0,"message":{"role":"assistant","content":"again"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)


async def test_a_connection_closed_without_an_answer_is_retried_once(
    start_llm: StartLlm,
) -> None:
    connections: list[int] = []

    async def provider(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        if len(connections) > 1:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
            )
            await writer.drain()
        writer.close()  # the first connection: closed without a word

    server = await asyncio.start_server(provider, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = f"""
providers:
- {{name: openai, type: OpenAI, url: "http://127.0.0.1:{port}/v1"}}
models:
- {{name: gpt-4o-mini, provider: openai}}
"""
    try:
        gateway = await start_llm(backend)
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(
                f"{gateway.base}/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "again"
        assert len(connections) == 2
    finally:
        server.close()
        await server.wait_closed()
