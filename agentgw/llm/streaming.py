"""A streaming response that ends as soon as the client leaves, even while the provider is silent.

Under ASGI spec 2.4 (the gateway's) Starlette's ``StreamingResponse`` notices a client that left
only when it next sends; a provider thinking for a minute between tokens would keep its call
open for that minute. :class:`ProviderStream` waits for ``http.disconnect`` alongside the stream
and cancels the stream when it comes: the body iterator's ``finally`` then closes the provider
call at once.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class ProviderStream(StreamingResponse):
    """``StreamingResponse`` that stops streaming when the client disconnects."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.ensure_future(self.stream_response(send))
        watching = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait((streaming, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watching, streaming):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if streaming.done() and not streaming.cancelled():
            streaming.result()  # the stream's own failure, if any, is the app's
