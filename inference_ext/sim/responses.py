"""Replies to generation requests: Server-Sent Events as tokens come, or one JSON body at the end.

Each reply is the engine's ``TokenSink`` for its sequence. A streamed text token costs one
concatenation of three prepared byte strings and one write: its event always has the same
length, because every generated word is 4 ASCII characters.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from inference_ext.sim.engine import SeqState, Sequence
from inference_ext.sim.openai_api import Answer, GenerationRequest
from inference_ext.sim.tokenizer import CHARS_PER_TOKEN, VOCAB, output_text

_WORDS = tuple(word.encode() for word in VOCAB)
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
)
_UNFINISHED = b',"logprobs":null,"finish_reason":null}]}\n\n'


class ReplyTarget(Protocol):
    """The connection a reply writes to."""

    def write(self, data: bytes) -> None:
        """Send bytes to the client."""

    def reply_done(self, close: bool) -> None:
        """The response is complete (close the connection if ``close``)."""


def _chunk(event: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(event), event)


def json_response(status: int, body: bytes, close: bool, reason: bytes = b"OK") -> bytes:
    """A whole ``application/json`` response."""
    return b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b" % (
        status,
        reason,
        len(body),
        b"connection: close\r\n" if close else b"",
        body,
    )


def _usage(seq: Sequence) -> dict[str, Any]:
    return {
        "prompt_tokens": seq.prompt.tokens,
        "completion_tokens": seq.generated,
        "total_tokens": seq.prompt.tokens + seq.generated,
        "prompt_tokens_details": {"cached_tokens": seq.cached_tokens},
    }


class Reply:
    """What every reply knows: the request, its planned answer and where to write."""

    def __init__(
        self,
        target: ReplyTarget,
        request: GenerationRequest,
        answer: Answer,
        response_id: str,
        created: int,
        close: bool,
    ) -> None:
        self.target = target
        self.request = request
        self.answer = answer
        self.response_id = response_id
        self.created = created
        self.close = close

    def finish_reason(self, seq: Sequence) -> str:
        """The API's finish reason: the planned one, unless the engine cut it short."""
        return self.answer.finish_reason if seq.generated >= self.answer.tokens else "length"


class StreamReply(Reply):
    """``stream: true``: an SSE event per token, a finishing event, usage, ``data: [DONE]``."""

    def __init__(
        self,
        target: ReplyTarget,
        request: GenerationRequest,
        answer: Answer,
        response_id: str,
        created: int,
        close: bool,
    ) -> None:
        super().__init__(target, request, answer, response_id, created, close)
        kind = b"chat.completion.chunk" if request.chat else b"text_completion"
        self._base = b'data: {"id":"%b","object":"%b","created":%d,"model":%b,"choices":[' % (
            response_id.encode(),
            kind,
            created,
            orjson.dumps(request.model),
        )
        opening = b'{"index":0,"delta":{"content":"' if request.chat else b'{"index":0,"text":"'
        closing = b'"}' if request.chat else b'"'
        head = self._base + opening
        tail = closing + _UNFINISHED
        self._lead = b"%x\r\n%b" % (len(head) + CHARS_PER_TOKEN + len(tail), head)
        self._trail = tail + b"\r\n"
        self._start = answer.text_start
        self._stride = answer.text_stride
        self._size = len(_WORDS)

    def head(self) -> bytes:
        """The response head, sent when the request is accepted."""
        return _SSE_HEAD + (b"connection: close\r\n\r\n" if self.close else b"\r\n")

    def on_token(self, seq: Sequence, now: float) -> None:
        """Send the newest token."""
        index = seq.generated - 1
        if self.answer.tool is not None:
            self._tool_token(index)
            return
        word = _WORDS[(self._start + index * self._stride) % self._size]
        if index:
            self.target.write(self._lead + word + self._trail)
        elif self.request.chat:  # the role comes first, as OpenAI sends it
            role = (
                self._base + b'{"index":0,"delta":{"role":"assistant","content":""}' + _UNFINISHED
            )
            self.target.write(_chunk(role) + self._lead + word + self._trail)
        else:
            self.target.write(self._lead + word + self._trail)

    def _tool_token(self, index: int) -> None:
        answer = self.answer
        piece = answer.arguments[index * CHARS_PER_TOKEN : (index + 1) * CHARS_PER_TOKEN]
        out = b""
        if index == 0:
            call = {
                "index": 0,
                "id": answer.tool_call_id,
                "type": "function",
                "function": {"name": answer.tool, "arguments": ""},
            }
            delta = {"role": "assistant", "content": None, "tool_calls": [call]}
            out = _chunk(self._base + b'{"index":0,"delta":%b' % orjson.dumps(delta) + _UNFINISHED)
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        event = self._base + b'{"index":0,"delta":%b' % orjson.dumps(delta) + _UNFINISHED
        self.target.write(out + _chunk(event))

    def on_finish(self, seq: Sequence, now: float) -> None:
        """Send the finishing event, usage if asked, ``[DONE]`` and the last chunk."""
        if seq.state is SeqState.ABORTED:
            return
        reason = self.finish_reason(seq).encode()
        if self.request.chat:
            last = b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"%b"}]}\n\n' % reason
        else:
            last = b'{"index":0,"text":"","logprobs":null,"finish_reason":"%b"}]}\n\n' % reason
        out = [_chunk(self._base + last)]
        if self.request.include_usage:
            usage = b'],"usage":%b}\n\n' % orjson.dumps(_usage(seq))
            out.append(_chunk(self._base + usage))
        out.append(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        self.target.write(b"".join(out))
        self.target.reply_done(self.close)


class JsonReply(Reply):
    """``stream: false``: the whole answer in one JSON body when the last token exists."""

    def on_token(self, seq: Sequence, now: float) -> None:
        """Nothing to send before the end."""

    def on_finish(self, seq: Sequence, now: float) -> None:
        """Send the completion."""
        if seq.state is SeqState.ABORTED:
            return
        answer, request = self.answer, self.request
        reason = self.finish_reason(seq)
        choice: dict[str, Any]
        if request.chat:
            message: dict[str, Any] = {"role": "assistant", "content": None}
            if answer.tool is not None:
                arguments = answer.arguments[: seq.generated * CHARS_PER_TOKEN]
                message["tool_calls"] = [
                    {
                        "id": answer.tool_call_id,
                        "type": "function",
                        "function": {"name": answer.tool, "arguments": arguments},
                    }
                ]
            else:
                message["content"] = output_text(
                    answer.text_start, answer.text_stride, seq.generated
                )
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
        else:
            text = output_text(answer.text_start, answer.text_stride, seq.generated)
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        body = {
            "id": self.response_id,
            "object": "chat.completion" if request.chat else "text_completion",
            "created": self.created,
            "model": request.model,
            "choices": [choice],
            "usage": _usage(seq),
        }
        self.target.write(json_response(200, orjson.dumps(body), self.close))
        self.target.reply_done(self.close)
