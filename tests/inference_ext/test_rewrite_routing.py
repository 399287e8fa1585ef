"""InferenceModelRewrite through the gateway: clients (httpx, the ``openai`` SDK) ask for
``llama``; simulators on 127.0.0.x serve ``llama-v1`` and ``llama-v2`` (LoRA adapters) and
answer 404 for any other name, and report the model they were asked for; a loopback echo server
shows the exact bytes an upstream gets. Weighted splits, the forcing header, sticky sessions
across a weight change (a config reload), overrides, version samples and the external picker."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.demo.echo import EchoServer
from gateway.observability.access_log import AccessLog
from gateway.observability.metrics import IstioMetrics
from gateway.observability.telemetry import GatewayTelemetry
from gateway.observability.tracing import Tracer
from gateway.snapshot import SnapshotHolder
from inference_ext.pool import Pools
from inference_ext.rewrite import RewriteState, VersionSample
from inference_ext.rewrite.sticky import assign, bucket
from tests.fixtures.extproc_peers import decision, start_fake_epp
from tests.fixtures.inference import (
    gateway_doc,
    pod_docs,
    pool_doc,
    pool_ref,
    pools,  # noqa: F401  (fixture)
    rewrite_doc,
    rewrite_state,  # noqa: F401  (fixture)
    route_doc,
)
from tests.fixtures.proxy import holder_from_yaml, wait_for
from tests.inference_ext.test_pool_routing import FAST, fleet_yaml, served, sims
from tests.inference_ext.test_pool_telemetry import samples

VERSIONS = replace(FAST, model="llama-base", loras=("llama-v1", "llama-v2"), max_loras=2)
FORCE = "x-gateway-model-name-rewrite"
SESSION = "x-session"


def canary(v1: int, v2: int, session_key: str | None = None) -> str:
    """The rewrite of ``llama`` to v1 / v2 with these weights."""
    return rewrite_doc(
        "canary", "llama", [(("llama",), [("llama-v1", v1), ("llama-v2", v2)])], session_key
    )


def ask(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "llama", "messages": [{"role": "user", "content": content}], **extra}


async def versions_of(
    client: httpx.AsyncClient, n: int, headers: dict[str, str] | None = None
) -> Counter[str]:
    """The model that answered each of ``n`` requests (16 at a time)."""
    seen: Counter[str] = Counter()
    for start in range(0, n, 16):
        answers = await asyncio.gather(
            *(
                client.post(
                    "/v1/chat/completions", json=ask(f"q{i}", max_tokens=1), headers=headers
                )
                for i in range(start, min(n, start + 16))
            )
        )
        for answer in answers:
            assert answer.status_code == 200, answer.text
            seen[answer.json()["model"]] += 1
    return seen


async def start(gateway_factory: Any, yaml: str) -> SnapshotHolder:
    holder = holder_from_yaml(yaml)
    await gateway_factory(holder)
    return holder


# -- bytes on the wire -----------------------------------------------------------------------------


async def test_the_upstream_gets_the_target_model_and_every_other_byte_with_their_length(
    pools: Pools,  # noqa: F811
    gateway_factory,
    echo: EchoServer,
    free_port: int,
) -> None:
    target = "llama-v2-\u00e9"
    yaml = (
        gateway_doc(free_port)
        + pod_docs("echo", ["127.0.0.1"])
        + pool_doc("llama", "echo", [echo.port])
        + rewrite_doc("canary", "llama", [(("llama",), [(target, None)])])
        + route_doc(f"  - backendRefs: [{pool_ref('llama')}]\n")
    )
    await start(gateway_factory, yaml)
    body = (
        b'{ "messages" : [ {"role":"user","content":"h\xc3\xa9 \\"model\\": \\u2603",'
        b'"model":"inner"} ],\n\t"model" :  "llama" ,"stream":false }'
    )
    expected = body.replace(b'"llama"', f'"{target}"'.encode())
    assert len(expected) != len(body)

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:20]
        yield body[20:]

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as c:
        sized = await c.post("/body", content=body)
        chunked = await c.post("/body", content=chunks())
    assert sized.status_code == 200 and sized.content == expected
    assert chunked.status_code == 200 and chunked.content == expected
    seen = [r for r in echo.stats.recent if r["path"] == "/body"]
    assert len(seen) == 2
    for request in seen:
        assert request["headers"]["content-length"] == str(len(expected))
        assert request["body_length"] == len(expected)
        assert "transfer-encoding" not in request["headers"]


# -- weighted split, forcing header ----------------------------------------------------------------


async def test_an_80_20_split_holds_over_400_requests_and_metrics_carry_both_models(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    async with sims(VERSIONS, 2) as servers:
        await start(gateway_factory, fleet_yaml(free_port, servers, extra=canary(80, 20)))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=30) as c:
            seen = await versions_of(c, 400)
    assert set(seen) == {"llama-v1", "llama-v2"}
    # Binomial(400, 0.2): mean 80, sd 8; four sd either way (a false failure ~1 in 15,000).
    assert abs(seen["llama-v2"] - 80) <= 32
    assert sum(served(servers)) == 400
    families = {f.name: f for f in pools.metrics.collect([pools.metrics.export_state()])}
    counts = {
        (s.labels["model_name"], s.labels["target_model_name"]): s.value
        for s in families["inference_objective_request"].samples
        if s.name.endswith("_total")
    }
    assert counts == {
        ("llama", "llama-v1"): seen["llama-v1"],
        ("llama", "llama-v2"): seen["llama-v2"],
    }


async def test_the_header_forces_any_target_of_the_rule_and_a_stranger_gets_400(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    async with sims(VERSIONS, 2) as servers:
        await start(gateway_factory, fleet_yaml(free_port, servers, extra=canary(1, 0)))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=30) as c:
            plain = await versions_of(c, 32)
            forced = await versions_of(c, 8, {FORCE: "llama-v2"})
            before = sum(served(servers))
            bad = await c.post("/v1/chat/completions", json=ask("hi"), headers={FORCE: "gpt-9"})
            empty = await c.post("/v1/chat/completions", json=ask("hi"), headers={FORCE: ""})
    assert plain == {"llama-v1": 32}  # weight 0 is never drawn
    assert forced == {"llama-v2": 8}  # but a forcing header reaches it
    assert bad.status_code == 400
    assert f"{FORCE}: 'gpt-9' is not a target of InferenceModelRewrite default/canary" in bad.text
    assert empty.status_code == 400 and f"{FORCE}: must name a model" in empty.text
    assert sum(served(servers)) == before  # the refused ones reached no server


async def test_all_zero_weights_keep_the_incoming_model(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    config = replace(VERSIONS, loras=("llama", "llama-v1", "llama-v2"), max_loras=3)
    async with sims(config, 1) as servers:
        await start(gateway_factory, fleet_yaml(free_port, servers, extra=canary(0, 0)))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=30) as c:
            seen = await versions_of(c, 8)
    assert seen == {"llama": 8}


async def test_a_body_without_a_model_passes_as_it_is_under_a_match_all_rule(
    pools: Pools,  # noqa: F811
    gateway_factory,
    echo: EchoServer,
    free_port: int,
) -> None:
    yaml = (
        gateway_doc(free_port)
        + pod_docs("echo", ["127.0.0.1"])
        + pool_doc("llama", "echo", [echo.port])
        + rewrite_doc("everything", "llama", [((), [("llama-v2", None)])])
        + route_doc(f"  - backendRefs: [{pool_ref('llama')}]\n")
    )
    await start(gateway_factory, yaml)
    body = b'{"prompt": "no model here"}'
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as c:
        kept = await c.post("/body", content=body)
        named = await c.post("/body", content=b'{"model": "anything", "prompt": "x"}')
    assert kept.status_code == 200 and kept.content == body
    assert named.status_code == 200 and named.content == b'{"model": "llama-v2", "prompt": "x"}'


# -- sticky sessions -------------------------------------------------------------------------------


async def test_sessions_keep_their_version_across_turns_and_a_weight_change(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    sessions = [f"user-{i}" for i in range(60)]

    async def conversation(c: httpx.AsyncClient, session: str) -> list[str]:
        """Two turns, the second carrying the first answer; the version of each."""
        messages = [{"role": "user", "content": f"hello from {session}"}]
        models = []
        for turn in range(2):
            r = await c.post(
                "/v1/chat/completions",
                json={"model": "llama", "messages": messages, "max_tokens": 2},
                headers={SESSION: session},
            )
            assert r.status_code == 200, r.text
            answer = r.json()
            models.append(answer["model"])
            messages += [answer["choices"][0]["message"], {"role": "user", "content": f"t{turn}"}]
        return models

    async def round_of(c: httpx.AsyncClient) -> dict[str, str]:
        turns = await asyncio.gather(*(conversation(c, s) for s in sessions))
        for models in turns:
            assert len(set(models)) == 1  # every turn of a session on one version
        return {s: models[0] for s, models in zip(sessions, turns, strict=True)}

    def predicted(v1: int, v2: int) -> dict[str, str]:
        names = ("llama-v1", "llama-v2")
        return {s: names[assign(bucket("default/canary", s), [v1, v2]) or 0] for s in sessions}

    async with sims(VERSIONS, 2) as servers:
        key = f"header:{SESSION}"
        holder = await start(
            gateway_factory, fleet_yaml(free_port, servers, extra=canary(90, 10, key))
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=30) as c:
            before = await round_of(c)
            holder.current = holder_from_yaml(
                fleet_yaml(free_port, servers, extra=canary(50, 50, key)), 2
            ).current
            after = await round_of(c)
            unkeyed = await versions_of(c, 40)
    assert before == predicted(90, 10) and after == predicted(50, 50)
    assert all(after[s] == "llama-v2" for s in sessions if before[s] == "llama-v2")
    moved = [s for s in sessions if before[s] != after[s]]
    assert moved and all(before[s] == "llama-v1" for s in moved)
    assert set(unkeyed) == {"llama-v1", "llama-v2"}  # no key: each request drawn at random


async def test_a_body_field_and_a_cookie_are_session_keys_too(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    async with sims(VERSIONS, 1) as servers:
        by_user = fleet_yaml(free_port, servers, extra=canary(50, 50, "body:user"))
        holder = await start(gateway_factory, by_user)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=30) as c:
            users = {}
            for user in ("ada", "bob", "cy", "dee"):
                got = {
                    (
                        await c.post(
                            "/v1/chat/completions", json=ask(f"{i}", user=user, max_tokens=1)
                        )
                    ).json()["model"]
                    for i in range(4)
                }
                assert len(got) == 1
                users[user] = got.pop()
            by_cookie = fleet_yaml(free_port, servers, extra=canary(50, 50, "cookie:sid"))
            holder.current = holder_from_yaml(by_cookie, 2).current
            cookies = {}
            for sid in ("ada", "bob", "cy", "dee"):
                got = {
                    (
                        await c.post(
                            "/v1/chat/completions",
                            json=ask(f"{i}", max_tokens=1),
                            headers={"cookie": f"theme=dark; sid={sid}"},
                        )
                    ).json()["model"]
                    for i in range(4)
                }
                assert len(got) == 1
                cookies[sid] = got.pop()
    names = ("llama-v1", "llama-v2")
    expected = {u: names[assign(bucket("default/canary", u), [50, 50]) or 0] for u in users}
    assert users == expected and cookies == expected


# -- the rollout controller's hooks ----------------------------------------------------------------


async def test_a_weight_override_applies_at_once_and_survives_a_reload(
    pools: Pools,  # noqa: F811
    rewrite_state: RewriteState,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    async with sims(VERSIONS, 2) as servers:
        yaml = fleet_yaml(free_port, servers, extra=canary(1, 0))
        holder = await start(gateway_factory, yaml)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=30) as c:
            assert await versions_of(c, 8) == {"llama-v1": 8}
            rewrite_state.set_weights("default/canary", "llama", {"llama-v1": 0, "llama-v2": 5})
            assert await versions_of(c, 8) == {"llama-v2": 8}
            holder.current = holder_from_yaml(yaml, 2).current
            assert await versions_of(c, 8) == {"llama-v2": 8}
            rewrite_state.set_weights("default/canary", "llama", None)
            assert await versions_of(c, 8) == {"llama-v1": 8}


async def test_observers_get_a_version_sample_of_a_streamed_answer_and_spans_name_both_models(
    pools: Pools,  # noqa: F811
    rewrite_state: RewriteState,  # noqa: F811
    gateway_factory,
    free_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    got: list[VersionSample] = []
    rewrite_state.observers.append(got.append)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    caplog.set_level(logging.INFO, logger="test.rewrite.access")
    telemetry = GatewayTelemetry(
        IstioMetrics(),
        Tracer(provider),
        AccessLog("json", logging.getLogger("test.rewrite.access")),
    )
    try:
        async with sims(VERSIONS, 1) as servers:
            yaml = fleet_yaml(free_port, servers, extra=canary(0, 1, f"header:{SESSION}"))
            await gateway_factory(holder_from_yaml(yaml), telemetry=telemetry)
            client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{free_port}/v1", api_key="-")
            stream = await client.chat.completions.create(
                model="llama",
                messages=[{"role": "user", "content": "count to six"}],
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=6,
                extra_headers={SESSION: "ada"},
            )
            usage, answered = None, set()
            async for chunk in stream:
                usage = chunk.usage or usage
                answered.add(chunk.model)
            await client.close()
            await wait_for(lambda: len(got) == 1 and len(spans.get_finished_spans()) == 1)
    finally:
        rewrite_state.observers.remove(got.append)
    assert usage is not None and usage.completion_tokens == 6 and answered == {"llama-v2"}
    (sample,) = got
    assert (sample.pool, sample.rewrite, sample.session) == (
        "default/llama",
        "default/canary",
        "ada",
    )
    assert (sample.incoming_model, sample.target_model, sample.status) == ("llama", "llama-v2", 200)
    assert sample.output_tokens == 6 and sample.request_id
    assert sample.ttft is not None and 0 < sample.ttft < sample.duration
    assert sample.tpot is not None
    assert sample.tpot == pytest.approx((sample.duration - sample.ttft) / 5)
    (span,) = spans.get_finished_spans()
    attributes = span.attributes or {}
    assert attributes["gen_ai.request.model"] == "llama-v2"
    assert attributes["inference.model.incoming"] == "llama"
    assert attributes["inference.rewrite"] == "default/canary"
    assert any('"inference.model.incoming":"llama"' in r.getMessage().replace(" ", "")
               for r in caplog.records)  # fmt: skip
    values = samples(telemetry.metrics.render().decode())
    labels = (("model_name", "llama"), ("target_model_name", "llama-v2"))
    assert values[("inference_objective_request_total", labels)] == 1
    assert values[("inference_objective_output_tokens_sum", labels)] == 6
    telemetry.close()


# -- the external picker ---------------------------------------------------------------------------


async def test_an_external_picker_is_asked_with_the_rewritten_body(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    from tests.inference_ext.test_pool_external_picker import external_yaml

    bodies: list[bytes] = []

    async with sims(VERSIONS, 1) as servers:
        address = f"{servers[0].address}:{servers[0].port}"

        async def picker(requests: AsyncIterator[Any], context: Any) -> None:
            body = b""
            async for message in requests:
                body += message.request_body.body
                if message.request_body.end_of_stream or message.request_headers.end_of_stream:
                    break
            bodies.append(body)
            await context.write(decision(address))
            async for _ in requests:
                pass

        fake = await start_fake_epp(picker)
        try:
            yaml = external_yaml(free_port, servers, fake.port, extra=canary(0, 1))
            await start(gateway_factory, yaml)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}") as c:
                r = await c.post("/v1/chat/completions", json=ask("hi", max_tokens=1), timeout=10)
        finally:
            await fake.server.stop(0)
    assert r.status_code == 200 and r.json()["model"] == "llama-v2"
    (body,) = bodies
    assert b'"model":"llama-v2"' in body and b'"llama"' not in body


async def test_a_retry_sends_the_rewritten_body_again_without_a_second_draw(
    pools: Pools,  # noqa: F811
    rewrite_state: RewriteState,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    from tests.inference_ext.test_pool_external_picker import RETRY_RULE, external_yaml

    got: list[VersionSample] = []
    rewrite_state.observers.append(got.append)
    async with sims(VERSIONS, 1) as servers:
        port = servers[0].port

        async def first_the_dead_one(requests: AsyncIterator[Any], context: Any) -> None:
            async for message in requests:
                if message.request_body.end_of_stream or message.request_headers.end_of_stream:
                    break
            await context.write(decision(f"127.0.0.9:{port},{servers[0].address}:{port}"))
            async for _ in requests:
                pass

        fake = await start_fake_epp(first_the_dead_one)
        try:
            yaml = external_yaml(
                free_port,
                servers,
                fake.port,
                extra_pods=["127.0.0.9"],  # a pod of the pool whose server is down
                extra=canary(1, 1),
                rule_extra=RETRY_RULE,
            )
            await start(gateway_factory, yaml)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}") as c:
                r = await c.post("/v1/chat/completions", json=ask("hi", max_tokens=1), timeout=10)
            await wait_for(lambda: len(got) == 1)
        finally:
            await fake.server.stop(0)
            rewrite_state.observers.remove(got.append)
    assert r.status_code == 200 and served(servers) == [1]
    (sample,) = got
    assert r.json()["model"] == sample.target_model and sample.status == 200
    # Both tries counted under the incoming model and the one target drawn.
    requests = {key: n for key, n in pools.metrics.requests.items() if key[0] == "llama"}
    assert requests == {("llama", sample.target_model): 2}
    assert set(pools.metrics.errors) == {("llama", sample.target_model, "503")}
