"""``ambient epp``'s gRPC server: Envoy's ExternalProcessor over a pool's Scheduler, plus health.

Each ``Process`` stream runs a :class:`~inference_ext.extproc.stream.PickerStream`; the scheduler
is awaited in the stream's own task, so a proxy that cancels the stream (its client left)
cancels a ``schedule()`` that is waiting in a queue. Refusals are ImmediateResponses (429 shed,
503 no capacity, 400 bad body, 413 body over the cap); a proxy that breaks the protocol gets
``INVALID_ARGUMENT`` and a scheduler that fails unexpectedly ``INTERNAL``: gRPC errors, on which
the proxy applies the pool's failure mode.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from inference_ext.extproc import messages as pb
from inference_ext.extproc.stream import (
    DEFAULT_MAX_BODY,
    Answer,
    PickerStream,
    ProtocolError,
    Reply,
    Served,
    State,
    no_priority,
)
from inference_ext.scheduling import Scheduler, SchedulingError
from ports import probe

log = logging.getLogger(__name__)

# Health services GIE's EPP serves: "" (the server), liveness, readiness and the processor.
HEALTH_SERVICES = ("", "liveness", "readiness", pb.SERVICE_NAME)


class ExtProcServicer:
    """The ``ExternalProcessor/Process`` handler for one pool's scheduler."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        priority_of: Callable[[str], int] = no_priority,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._scheduler = scheduler
        self._priority_of = priority_of
        self._max_body = max_body

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a ``grpc.aio`` server."""
        method = grpc.stream_stream_rpc_method_handler(
            self.process,
            request_deserializer=pb.parse_request,
            response_serializer=pb.serialize,
        )
        return grpc.method_handlers_generic_handler(pb.SERVICE_NAME, {"Process": method})

    async def process(self, requests: AsyncIterator[Any], context: Any) -> None:
        """Serve one stream (one HTTP request) to its end."""
        stream = PickerStream(priority_of=self._priority_of, max_body=self._max_body)
        try:
            async for message in requests:
                for event in stream.receive(message):
                    if isinstance(event, Reply):
                        await context.write(event.response)
                    elif isinstance(event, Served):
                        self._served(event)
                    elif isinstance(event, Answer):
                        await context.write(event.response)
                        return
                    else:
                        for response in await self._schedule(stream, event.request, context):
                            await context.write(response)
                        if stream.state is State.DONE:  # refused
                            return
        except ProtocolError as exc:
            log.warning("ext_proc stream from %s broke the protocol: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            served = stream.ended()
            if served is not None:
                self._served(served)

    async def _schedule(self, stream: PickerStream, request: Any, context: Any) -> list[Any]:
        try:
            endpoints = await self._scheduler.schedule(request)
        except SchedulingError as exc:
            return [stream.refused(exc.status, exc.message)]
        except Exception as exc:
            log.exception("the scheduler failed on request %s", request.request_id)
            await context.abort(grpc.StatusCode.INTERNAL, f"the scheduler failed: {exc!r}")
        if not endpoints:
            return [stream.refused(503, "the scheduler chose no endpoint")]
        return stream.decided(endpoints)

    def _served(self, served: Served) -> None:
        try:
            self._scheduler.served(served.request, served.endpoint, served.outcome)
        except Exception:
            log.exception(
                "the scheduler failed to take the outcome of %s", served.request.request_id
            )


@dataclass(slots=True)
class EndpointPickerServer:
    """A running ``ambient epp`` server: the gRPC server, its bound port and its health."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def set_ready(self, ready: bool) -> None:
        """Flip ``readiness`` (and the processor's service) between SERVING and NOT_SERVING."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("readiness", pb.SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self, grace: float | None = 5.0) -> None:
        """Report NOT_SERVING, then stop; streams get ``grace`` seconds to end."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

    async def wait(self) -> None:
        """Until the server stops."""
        await self.server.wait_for_termination()


async def start_server(
    scheduler: Scheduler,
    listen: str = "127.0.0.1:9002",
    *,
    priority_of: Callable[[str], int] = no_priority,
    max_body: int = DEFAULT_MAX_BODY,
) -> EndpointPickerServer:
    """Serve ext_proc for ``scheduler`` on ``listen`` ("host:port"; port 0 picks one) in the
    running event loop, with every health service SERVING."""
    host, _, port_text = listen.rpartition(":")
    if port_text.isdigit() and int(port_text):
        # grpcio's own bind error names nothing: a taken port is found (and named) here first.
        probe(host.strip("[]") or "0.0.0.0", int(port_text), setting=f"--listen {listen}")
    # grpcio sets SO_REUSEPORT by default: another process could then share the port silently.
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    servicer = ExtProcServicer(scheduler, priority_of=priority_of, max_body=max_body)
    server.add_generic_rpc_handlers((servicer.rpc_handler(),))
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for service in HEALTH_SERVICES:
        await checker.set(service, health_pb2.HealthCheckResponse.SERVING)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:  # grpcio's "Failed to bind to address ..."
        raise OSError(f"cannot listen on {listen}: the address is taken or not valid") from exc
    await server.start()
    log.info("endpoint picker serving ext_proc on %s (port %d)", listen, port)
    return EndpointPickerServer(server, port, checker)
