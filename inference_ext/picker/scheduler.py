"""One InferencePool's endpoint picker: filters, scorers, a max-score pick, flow control.

For each request (``schedule``):

1. **Admission.** The pool's saturation is the mean over its servers of
   ``max(queue / queueDepthThreshold, kv / kvCacheUtilThreshold)`` (a server whose metrics are
   stale counts as 1.0). At 1.0 or more a sheddable request (priority < 0) is refused with 429;
   others wait in the pool's queue, best priority first, until capacity frees (503 after the
   queue's TTL) — unless no server has fresh metrics, when nothing could tell that capacity
   freed: then requests are admitted and spread by the other signals.
2. **Filters.** The ``x-gateway-destination-endpoint-subset`` servers only (none of them: 503);
   servers not tried yet by this request, when there are any; servers below the saturation
   thresholds with fresh metrics, when there are any — and servers holding at least half of the
   prompt's blocks while their queue is below its threshold, whatever their KV cache use (it
   holds the prefix this request would prefill again elsewhere).
3. **Scorers** (each in [0, 1], weighted): *queue* — min-max of the waiting queue, counting the
   requests this picker sent since the server's last scrape that are not over yet; *kvCache* —
   ``1 - kv use``; *prefixCache* — the fraction of the prompt's leading blocks the server
   probably holds (:mod:`inference_ext.picker.prefix`); *lora* — for a model that is an adapter
   somewhere in the pool: 1.0 where it is loaded, 0.6 where it waits, 0.8 where a slot is free,
   else 0;
   *inflight* — ``1 - min(1, in flight / inflightCapacity)`` for the requests this picker has
   on the server now (gradual: one more request on a server is a small step, not the full
   swing a min-max would make of it).
4. **Picker.** The highest total, ties broken at random; the next best as ordered fallbacks for
   retries. The chosen server is told the prompt's blocks (prefix index) and counts one more
   request in flight until ``served``.

The scheduler outlives configuration reloads (the pool's servers, objectives and settings are
swapped in by ``reconfigure``); its scraper runs in the serving process's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.backends.base import Endpoint, Outcome
from inference_ext.picker.config import PickerConfig
from inference_ext.picker.flow import WaitQueue
from inference_ext.picker.prefix import CHARS_PER_TOKEN, PrefixIndex, block_hashes
from inference_ext.picker.scrape import Scraper
from inference_ext.picker.signals import MetricsParseError, Signals, read_signals
from inference_ext.request import InferenceRequest
from inference_ext.scheduling import NoCapacity, Shed

log = logging.getLogger(__name__)

DECISIONS_KEPT = 64
# A server holding at least this share of a prompt's blocks stays a candidate while its queue
# has room, even with its KV cache past the threshold: that cache is full of the blocks the
# request would otherwise prefill again elsewhere (the saturation filter alone, under heavy load,
# dropped exactly the servers holding a conversation's prefix; bench.scheduling measures it).
WARM_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class PoolView:
    """What one configuration says about the pool: settings, servers, objectives."""

    config: PickerConfig
    endpoints: Mapping[str, Endpoint]  # "ip:port" -> the endpoint the data path dials
    objectives: Mapping[str, int]  # InferenceObjective name -> priority


@dataclass(frozen=True, slots=True)
class Decision:
    """One pick, for the admin view."""

    at: float  # wall clock
    request_id: str
    model: str
    priority: int
    chosen: str
    fallbacks: tuple[str, ...]
    scores: Mapping[str, float]
    prefix_blocks: int
    matched_blocks: int
    waited: float  # seconds in the queue


def key_of(endpoint: Endpoint) -> str:
    """``ip:port`` as the protocol headers write it (IPv6 in brackets)."""
    return str(endpoint)


class PoolScheduler:
    """Implements :class:`inference_ext.scheduling.Scheduler` for one pool."""

    def __init__(self, name: str, view: PoolView) -> None:
        self.name = name  # "namespace/pool"
        self.view = view
        self.signals: dict[str, Signals] = {}
        self.inflight: dict[str, int] = {}
        self.pending: dict[str, int] = {}  # requests sent to a server since its last scrape
        self.index = PrefixIndex(view.config.lru_capacity)
        self.queue = WaitQueue()
        self.decisions: deque[Decision] = deque(maxlen=DECISIONS_KEPT)
        self.scheduled = 0
        self.shed = 0
        self.timed_out = 0
        self.rng = random.Random()
        self.scraper = Scraper(
            view.config.scrape_interval, self.observe_metrics, self._on_error, self._release
        )
        self._reserved = 0  # released from the queue, not picked yet
        # An external endpoint picker serves the pool: this one only chooses when it fails
        # (FailOpen), and scrapes nothing.
        self.passive = False
        self.reconfigure(view)

    # -- configuration (any thread) ---------------------------------------------------------------

    def reconfigure(self, view: PoolView) -> None:
        """A new configuration: servers, objectives, settings (swapped in one store)."""
        self.view = view
        self.scraper.interval = view.config.scrape_interval
        self.scraper.set_targets({k: (e.address, e.port) for k, e in view.endpoints.items()})

    # -- lifecycle (the serving loop) ----------------------------------------------------------

    def start(self) -> None:
        """Start scraping (no-op when started or passive)."""
        if not self.passive:
            self.scraper.start()

    async def stop(self) -> None:
        """Stop scraping."""
        await self.scraper.stop()

    # -- the Scheduler protocol ----------------------------------------------------------------

    async def schedule(self, request: InferenceRequest) -> list[Endpoint]:
        """Endpoints for the request, best first; may wait in the pool's queue."""
        chosen = self.try_schedule(request)
        if chosen is not None:
            return chosen
        return await self.wait_and_pick(request)

    def try_schedule(self, request: InferenceRequest) -> list[Endpoint] | None:
        """The endpoints now, when the request need not wait (None: it must, see
        ``wait_and_pick``). Shed (429) for a sheddable request while the pool is saturated."""
        self.start()
        loads = self._loads()
        if self._saturation(loads) < 1.0:
            return self.pick(request, 0.0, loads)
        if request.priority < 0:
            self.shed += 1
            raise Shed(f"InferencePool {self.name} is saturated: sheddable request refused")
        if self._blind():
            return self.pick(request, 0.0, loads)  # nothing would tell when capacity frees
        return None

    async def wait_and_pick(self, request: InferenceRequest) -> list[Endpoint]:
        """Wait in the pool's queue (best priority first) until capacity frees, then pick."""
        config = self.view.config
        started = time.monotonic()
        try:
            await self.queue.wait(request.priority, config.max_queued, config.queue_ttl)
        except NoCapacity:
            self.timed_out += 1
            raise
        finally:
            waited = time.monotonic() - started
        self._reserved = max(0, self._reserved - 1)
        return self.pick(request, waited)

    def served(self, request: InferenceRequest, endpoint: Endpoint, outcome: Outcome) -> None:
        """A try at ``endpoint`` ended: one fewer in flight there; maybe release a waiter."""
        self.release(endpoint)

    def release(self, endpoint: Endpoint) -> None:
        """A request ``pick`` sent to ``endpoint`` is over (``served``, or a request the
        gateway made itself, e.g. a canary copy)."""
        key = key_of(endpoint)
        count = self.inflight.get(key, 0)
        if count > 0:
            self.inflight[key] = count - 1
        pending = self.pending.get(key, 0)
        if pending > 0:  # sent since the last scrape and already over: in no queue now
            self.pending[key] = pending - 1
        self._release()

    # -- picking -------------------------------------------------------------------------------

    def pick(
        self,
        request: InferenceRequest,
        waited: float = 0.0,
        loads: Mapping[str, float] | None = None,
    ) -> list[Endpoint]:
        """Filters, scorers and the max-score pick (no admission: see ``schedule``)."""
        view = self.view
        config = view.config
        endpoints = view.endpoints
        if loads is None:
            loads = self._loads()
        candidates: list[str] = list(endpoints)
        if request.subset is not None:
            candidates = [k for k in candidates if k in request.subset]
            if not candidates:
                raise NoCapacity(
                    f"no endpoint of InferencePool {self.name} is in the requested subset"
                )
        if not candidates:
            raise NoCapacity(f"InferencePool {self.name} has no ready endpoint")
        if request.exclude:
            untried = [k for k in candidates if k not in request.exclude]
            candidates = untried or candidates

        weights = config.weights
        hashes: list[int] = []
        matches: dict[str, int] = {}
        if weights.prefix_cache and request.prompt:
            hashes = block_hashes(
                request.model, request.prompt, config.block_bytes, config.max_blocks
            )
            matches = self.index.matches(hashes)
        if matches:
            warm = max(1, int(len(hashes) * WARM_SHARE))
            unsaturated = [
                k
                for k in candidates
                if loads[k] < 1.0 or (matches.get(k, 0) >= warm and self._queue_room(k))
            ]
        else:
            unsaturated = [k for k in candidates if loads[k] < 1.0]
        candidates = unsaturated or candidates
        signals = self.signals
        pending = self.pending
        inflight = self.inflight
        empty = _EMPTY
        queues = [signals.get(k, empty).waiting + pending.get(k, 0) for k in candidates]
        q_low, q_high = min(queues), max(queues)
        q_span = q_high - q_low
        w_queue, w_kv, w_inflight = weights.queue, weights.kv_cache, weights.inflight
        w_prefix = weights.prefix_cache / len(hashes) if hashes else 0.0
        w_lora = weights.lora if self._is_adapter(request.model) else 0.0
        per_request = 1.0 / config.inflight_capacity
        jitter = self.rng.random
        scores: dict[str, float] = {}
        ranked: list[tuple[float, str]] = []
        for key, queue in zip(candidates, queues, strict=True):
            s = signals.get(key, empty)
            kv = s.kv_cache
            score = w_queue * ((q_high - queue) / q_span if q_span > 0 else 1.0)
            score += w_kv * (1.0 - (0.0 if kv < 0.0 else 1.0 if kv > 1.0 else kv))
            busy = inflight.get(key, 0) * per_request
            score += w_inflight * (1.0 - (busy if busy < 1.0 else 1.0))
            if w_prefix:
                score += w_prefix * matches.get(key, 0)
            if w_lora:
                score += w_lora * _lora_score(s, request.model)
            scores[key] = score
            ranked.append((score + jitter() * 1e-9, key))  # ties broken at random
        if len(ranked) > 1:
            ranked.sort(reverse=True)
        chosen = ranked[0][1]
        fallbacks = [key for _, key in ranked[1 : 1 + config.fallbacks]]
        inflight[chosen] = inflight.get(chosen, 0) + 1
        pending[chosen] = pending.get(chosen, 0) + 1
        if hashes:
            self.index.add(chosen, hashes)
        self.scheduled += 1
        self.decisions.append(
            Decision(
                time.time(),
                request.request_id,
                request.model,
                request.priority,
                chosen,
                tuple(fallbacks),
                scores,
                len(hashes),
                matches.get(chosen, 0),
                waited,
            )
        )
        return [endpoints[chosen], *(endpoints[k] for k in fallbacks)]

    def _is_adapter(self, model: str) -> bool:
        """Whether some server of the pool runs or waits for ``model`` as a LoRA adapter."""
        if not model:
            return False
        for s in self.signals.values():
            if model in s.lora_running or model in s.lora_waiting:
                return True
        return False

    # -- saturation ----------------------------------------------------------------------------

    def saturation(self) -> float:
        """The mean server load (see the module docstring); 1.0 or more is saturated."""
        return self._saturation(self._loads())

    def _saturation(self, loads: Mapping[str, float]) -> float:
        if not loads:
            return 0.0
        reserved = self._reserved / self.view.config.queue_threshold  # released, not landed
        return (sum(loads.values()) + reserved) / len(loads)

    def _loads(self) -> dict[str, float]:
        """Each server's load now: ``max(queue / threshold, kv / threshold)``, 1.0 if stale."""
        now = asyncio.get_running_loop().time()
        config = self.view.config
        oldest = now - config.stale_after
        queue_threshold, kv_threshold = config.queue_threshold, config.kv_threshold
        signals, pending = self.signals, self.pending
        loads: dict[str, float] = {}
        for key in self.view.endpoints:
            s = signals.get(key)
            if s is None or not s.at or s.at < oldest:
                loads[key] = 1.0
                continue
            queue = (s.waiting + pending.get(key, 0)) / queue_threshold
            kv = s.kv_cache / kv_threshold
            loads[key] = queue if queue > kv else kv
        return loads

    def _queue_room(self, key: str) -> bool:
        """Fresh metrics and a queue below its threshold (the KV cache use aside)."""
        s = self.signals.get(key)
        if s is None or not s.at:
            return False
        config = self.view.config
        if s.at < asyncio.get_running_loop().time() - config.stale_after:
            return False
        return s.waiting + self.pending.get(key, 0) < config.queue_threshold

    def _blind(self) -> bool:
        """No server has fresh metrics: the pool's load is unknown, and stays so."""
        now = asyncio.get_running_loop().time()
        stale = self.view.config.stale_after
        return not any(s.at and now - s.at <= stale for s in self.signals.values())

    def _release(self) -> None:
        """Let waiting requests go while the pool has capacity for them (all of them when its
        load cannot be known any more)."""
        while len(self.queue) and (self.saturation() < 1.0 or self._blind()):
            if not self.queue.release_one():
                break
            self._reserved += 1

    # -- scraping callbacks --------------------------------------------------------------------

    def observe_metrics(self, key: str, text: bytes) -> None:
        """A scrape of ``key`` answered ``text`` (the scraper calls this; so may tests)."""
        signals = self.signals.get(key)
        if signals is None:
            signals = self.signals[key] = Signals()
        try:
            read_signals(text, self.view.config.names, signals)
        except MetricsParseError as exc:
            self._on_error(key, exc)
            return
        signals.at = asyncio.get_running_loop().time()
        signals.errors = 0
        self.pending[key] = 0
        if signals.num_blocks:
            # The server's KV blocks (of block_size tokens) in the index's blocks.
            tokens = signals.num_blocks * (signals.block_size or 16)
            block_tokens = self.view.config.block_bytes // CHARS_PER_TOKEN
            self.index.capacities[key] = max(1, tokens // block_tokens)

    def _on_error(self, key: str, error: Exception) -> None:
        signals = self.signals.get(key)
        if signals is None:
            signals = self.signals[key] = Signals()
        signals.errors += 1
        if signals.errors == 1:
            log.info("InferencePool %s: scraping %s failed: %s", self.name, key, error)
        for gone in [k for k in self.signals if k not in self.view.endpoints]:
            del self.signals[gone]
            self.index.forget(gone)

    # -- the admin view ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """A JSON-able picture: servers and their signals, the queue, recent decisions."""
        now = asyncio.get_running_loop().time() if _loop_running() else 0.0
        loads = self._loads() if now else {}
        servers = []
        for key in self.view.endpoints:
            s = self.signals.get(key)
            servers.append(
                {
                    "endpoint": key,
                    "waiting": s.waiting if s else None,
                    "running": s.running if s else None,
                    "kvCacheUsage": s.kv_cache if s else None,
                    "loraRunning": sorted(s.lora_running) if s else [],
                    "metricsAge": round(now - s.at, 3) if s and s.at and now else None,
                    "inflight": self.inflight.get(key, 0),
                    "load": round(loads[key], 3) if loads else None,
                }
            )
        return {
            "pool": self.name,
            "saturation": round(self._saturation(loads), 3) if now else None,
            "queued": len(self.queue),
            "scheduled": self.scheduled,
            "shed": self.shed,
            "timedOut": self.timed_out,
            "prefixIndexBlocks": self.index.size(),
            "servers": servers,
            "decisions": [
                {
                    "requestId": d.request_id,
                    "model": d.model,
                    "priority": d.priority,
                    "chosen": d.chosen,
                    "fallbacks": list(d.fallbacks),
                    "scores": {k: round(v, 3) for k, v in d.scores.items()},
                    "prefixBlocks": d.prefix_blocks,
                    "matchedBlocks": d.matched_blocks,
                    "waited": round(d.waited, 6),
                }
                for d in reversed(self.decisions)
            ],
        }


_EMPTY = Signals()


def _lora_score(s: Signals, model: str) -> float:
    if model in s.lora_running:
        return 1.0
    if s.max_lora and len(s.lora_running) + len(s.lora_waiting) < s.max_lora:
        return 0.8
    if model in s.lora_waiting:
        return 0.6
    return 0.0


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
