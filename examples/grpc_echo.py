"""A gRPC echo backend for examples/grpc.yaml: answers every method of every service.

    python examples/grpc_echo.py --listen 127.0.0.1:9030 --name embeddings

A unary call's answer is ``<name> <method> <request bytes>`` (raw bytes, no protobuf), so a
client sees which backend served it; metadata ``x-echo-fail: <code name>`` answers that status
instead (e.g. ``UNAVAILABLE``). Clients need only grpcio:

    python -c "import grpc; c = grpc.insecure_channel('127.0.0.1:9030'); \
print(c.unary_unary('/inference.v1.Embeddings/Embed')(b'hi'))"
"""

from __future__ import annotations

import argparse
from concurrent import futures

import grpc


class _Echo(grpc.GenericRpcHandler):
    def __init__(self, name: str) -> None:
        self.name = name

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            fail = dict(context.invocation_metadata()).get("x-echo-fail")
            if fail:
                context.abort(grpc.StatusCode[fail.upper()], f"{self.name}: asked to fail")
            return f"{self.name} {method} ".encode() + request

        return grpc.unary_unary_rpc_method_handler(unary)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9030", help="HOST:PORT (h2c)")
    parser.add_argument("--name", default="grpc-echo", help="the name each answer starts with")
    args = parser.parse_args(argv)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[_Echo(args.name)])
    server.add_insecure_port(args.listen)
    server.start()
    print(f"grpc echo backend {args.name} listening on {args.listen}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
