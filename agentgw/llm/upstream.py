"""Provider calls: one aiohttp client per serving process, provider headers, provider health.

The client is made by the plugin's start hook in the serving loop (the default trust store for
https URLs; a pool endpoint's BackendTLSPolicy context for its calls) and closed by its stop hook.
It is aiohttp's, not httpx's: ``python -m bench.llm`` measured httpx's connection pool at two
thirds of the gateway's CPU per call (its expiry scan walks every pooled connection per request),
aiohttp's C parser and pool at a fraction of it. :class:`ProviderHealth` remembers, per
provider, a ``Retry-After`` back-off and consecutive failures: after ``eject_after`` failures in a
row the provider is ejected for ``ejection`` seconds (doubling while it keeps failing, up to
``max_ejection``). Health lives in process state, so it survives reloads.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from agentgw.buckets import Budgets
from agentgw.llm.catalog import ProviderConfig
from agentgw.llm.metrics import LlmMetrics
from agentgw.toolcalls import ToolCallLedger
from gateway.observability.genai import GenAiMetrics
from gateway.tls.upstream import UpstreamTls

ANTHROPIC_VERSION = "2023-06-01"
# Client headers a provider may see; everything else (the client's credentials first) stays here.
_FORWARDED = {"anthropic-version", "anthropic-beta", "openai-organization", "openai-project"}


def provider_path(provider: ProviderConfig, operation: str) -> str:
    """The URL of ``operation`` (``chat``, ``messages``, ``completions``, ``embeddings``) on
    ``provider``: an OpenAI provider's ``url`` ends with its API version (``…/v1``), an
    Anthropic provider's is the host. A provider behind a pool gets the path alone (``/v1/…``,
    as vLLM serves it), for the endpoint its pick chooses."""
    base = provider.url if provider.pool is None else ""
    if provider.type == "Anthropic":
        return f"{base}/v1/messages"
    if provider.pool is not None:
        base = "/v1"
    if operation in ("completions", "embeddings"):
        return f"{base}/{operation}"
    return f"{base}/chat/completions"


def provider_headers(
    provider: ProviderConfig, client: Mapping[str, str], relay: bool
) -> dict[str, str]:
    """The headers of a call to ``provider``: its key, never the client's.

    A ``relay`` (same format both sides) hands the provider's bytes to the client as they come,
    so the provider may only use an encoding the client accepts; a translated answer is read
    here event by event, so it comes uncompressed.
    """
    headers = {"content-type": "application/json", "accept": client.get("accept", "*/*")}
    headers["accept-encoding"] = client.get("accept-encoding", "identity") if relay else "identity"
    for name in _FORWARDED:
        if name in client:
            headers[name] = client[name]
    if provider.type == "Anthropic":
        headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
        for name in ("openai-organization", "openai-project"):
            headers.pop(name, None)
        if provider.api_key:
            headers["x-api-key"] = provider.api_key
    else:
        headers.pop("anthropic-version", None)
        headers.pop("anthropic-beta", None)
        if provider.api_key:
            headers["authorization"] = f"Bearer {provider.api_key}"
    return headers


@dataclass(slots=True)
class _Record:
    failures: int = 0
    until: float = 0.0  # skipped before this monotonic time
    ejection: float = 0.0


@dataclass(slots=True)
class ProviderHealth:
    """Back-off and outlier ejection per provider name."""

    eject_after: int = 3
    ejection: float = 5.0
    max_ejection: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _records: dict[str, _Record] = field(default_factory=dict)

    def available(self, provider: str) -> bool:
        record = self._records.get(provider)
        return record is None or record.until <= self.clock()

    def succeeded(self, provider: str) -> None:
        self._records.pop(provider, None)

    def failed(self, provider: str, retry_after: float | None = None) -> None:
        record = self._records.setdefault(provider, _Record())
        record.failures += 1
        now = self.clock()
        if retry_after is not None:
            record.until = max(record.until, now + retry_after)
        if record.failures >= self.eject_after:
            record.ejection = min(
                self.max_ejection, record.ejection * 2 if record.ejection else self.ejection
            )
            record.until = max(record.until, now + record.ejection)
            record.failures = 0

    def describe(self) -> dict[str, float]:
        now = self.clock()
        return {name: r.until - now for name, r in self._records.items() if r.until > now}


@dataclass(slots=True)
class LlmState:
    """Process state shared by every LLMBackend app: the client, provider health, key budgets."""

    client: aiohttp.ClientSession | None = None
    health: ProviderHealth = field(default_factory=ProviderHealth)
    budgets: Budgets = field(default_factory=Budgets)
    metrics: LlmMetrics = field(default_factory=LlmMetrics)
    genai: GenAiMetrics = field(default_factory=GenAiMetrics)
    tool_calls: ToolCallLedger = field(default_factory=ToolCallLedger)

    def http(self) -> aiohttp.ClientSession:
        if self.client is None:
            self.client = new_client()
        return self.client

    async def start(self) -> None:
        self.http()

    async def stop(self) -> None:
        self.budgets.detach()
        if self.client is not None:
            client, self.client = self.client, None
            await client.close()


def new_client() -> aiohttp.ClientSession:
    """The per-process provider client: certificates verified against the system's trust store
    (as the gateway's own upstream TLS is; ``SSL_CERT_FILE``/``SSL_CERT_DIR`` point OpenSSL
    elsewhere), TLS 1.2 or later. Bodies are never decoded here: a relay hands the provider's
    bytes to the client as they come, and a translated call asks for ``identity``."""
    trust = ssl.create_default_context()
    trust.minimum_version = ssl.TLSVersion.TLSv1_2
    connector = aiohttp.TCPConnector(limit=512, limit_per_host=0, ssl=trust, keepalive_timeout=60)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("user-agent",),
    )


# Failures of a call before its answer began, and of an answer's body: the provider's fault.
CALL_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
# A pooled connection the provider closed while idle fails the next request sent on it before
# any answer: that request is sent once more, on a new connection (the provider never saw it).
_STALE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


async def send(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
    tls: UpstreamTls | None = None,
) -> aiohttp.ClientResponse:
    """POST ``body``; the answer once its head arrived (its body is read by the caller).

    ``timeout`` bounds the connect (at most 10 s) and every read: a provider silent that long
    before its first byte, or between two, has failed; a long answer that keeps coming has not.
    """
    options: dict[str, object] = {
        "data": body,
        "headers": headers,
        "timeout": aiohttp.ClientTimeout(total=None, connect=min(timeout, 10.0), sock_read=timeout),
    }
    if tls is not None:
        options["ssl"] = tls.context
        options["server_hostname"] = tls.server_name
    try:
        return await http.post(url, **options)  # type: ignore[arg-type]
    except aiohttp.ClientConnectorError:
        raise  # no connection was made: nothing stale, and the next target is tried instead
    except _STALE:
        return await http.post(url, **options)  # type: ignore[arg-type]


def release(answer: aiohttp.ClientResponse) -> bool:
    """Give ``answer``'s connection back (or close it when its body was not read to the end);
    whether the body was read to the end."""
    whole = answer.content.at_eof()
    if whole:
        answer.release()
    else:
        answer.close()
    return whole


def retry_after(headers: Mapping[str, str]) -> float | None:
    """A ``Retry-After`` in seconds (only the delta-seconds form)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
