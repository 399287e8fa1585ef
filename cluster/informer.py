"""One resource type kept in step with the API server: list, then watch from that version.

It resumes a broken watch from the last resourceVersion it saw (bookmarks included), so an
update made while the stream was down is still delivered; when the server says that version is
gone (410), it lists again and hands over the whole set. Errors back off with jitter
(tenacity). The ``kubernetes`` client is synchronous, so each informer runs in a thread and
hands what it reads to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity
from kubernetes import client, watch

from cluster.listing import list_call, list_page
from cluster.resources import Resource

log = logging.getLogger("cluster.informer")

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Scope:
    """What one informer reads: a resource, optionally one namespace and a field selector."""

    resource: Resource
    namespace: str | None = None
    field_selector: str | None = None

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        selector = f" ({self.field_selector})" if self.field_selector else ""
        return f"{self.resource}{where}{selector}"


class Sink:
    """Receives an informer's results on the event loop."""

    def replace(self, scope: Scope, items: list[Obj]) -> None:
        """The complete set of objects in ``scope`` (after a list)."""
        raise NotImplementedError

    def event(self, scope: Scope, kind: str, obj: Obj) -> None:
        """One ADDED, MODIFIED or DELETED event."""
        raise NotImplementedError


class Expired(Exception):
    """The resourceVersion to resume from is too old (410 Gone): list again."""


@dataclass(frozen=True, slots=True)
class InformerOptions:
    """Timing: server-side watch timeout, list page size, back-off bounds (seconds)."""

    watch_timeout: int = 300
    page_size: int = 500
    backoff_initial: float = 0.2
    backoff_max: float = 30.0


class Informer:
    """List+watch of one Scope in a daemon thread, results posted to ``sink`` on ``loop``."""

    def __init__(
        self,
        api: client.ApiClient,
        scope: Scope,
        sink: Sink,
        loop: asyncio.AbstractEventLoop,
        options: InformerOptions | None = None,
    ) -> None:
        self.scope = scope
        self.options = options or InformerOptions()
        self._call = list_call(api, scope.resource, scope.namespace)
        self._sink = sink
        self._loop = loop
        self._stopped = threading.Event()
        self._watch: watch.Watch | None = None
        self.resource_version: str | None = None
        self.lists = 0  # full lists made (the first, and one per 410)
        self.synced = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer {scope}", daemon=True)

    def start(self) -> None:
        """Start listing and watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop (the thread ends at its next event or when its stream is cut)."""
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if not self._stopped.is_set():
            self._loop.call_soon_threadsafe(fn, *args)

    def _run(self) -> None:
        retrying = tenacity.Retrying(
            wait=tenacity.wait_random_exponential(
                multiplier=self.options.backoff_initial, max=self.options.backoff_max
            ),
            retry=tenacity.retry_if_exception(lambda exc: not self._stopped.is_set()),
            sleep=self._pause,
            before_sleep=self._log_retry,
            reraise=True,
        )
        while not self._stopped.is_set():
            try:
                retrying(self._session)
            except Exception:
                if not self._stopped.is_set():
                    raise

    def _pause(self, seconds: float) -> None:
        """Back-off sleep that ends early when the informer is stopped."""
        self._stopped.wait(seconds)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: %s; retrying in %.2fs", self.scope, _describe(exc), wait)

    def _session(self) -> None:
        """List if there is nothing to resume from, then watch until the stream ends."""
        if self.resource_version is None:
            self._list()
        try:
            self._watch_once()
        except Expired:
            log.info(
                "%s: resourceVersion %s expired, listing again", self.scope, self.resource_version
            )
            self.resource_version = None

    def _params(self) -> dict[str, Any]:
        return {"field_selector": self.scope.field_selector} if self.scope.field_selector else {}

    def _list(self) -> None:
        items: list[Obj] = []
        token: str | None = None
        while True:
            params = {**self._params(), "limit": self.options.page_size}
            if token:
                params["_continue"] = token
            page = list_page(self._call, **params)
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        self.resource_version = str(page["metadata"]["resourceVersion"])
        self.lists += 1
        self._post(self._sink.replace, self.scope, [self._typed(o) for o in items])
        self._post(self.synced.set)

    def _typed(self, obj: Obj) -> Obj:
        """``obj`` with its ``apiVersion`` and ``kind``: kube-apiserver leaves them out of the
        items of a built-in kind's list (kubernetes/kubernetes#3030), and everything reading the
        cache tells objects apart by them."""
        if obj.get("kind") and obj.get("apiVersion"):
            return obj
        resource = self.scope.resource
        return {**obj, "apiVersion": resource.api_version, "kind": resource.kind}

    def _watch_once(self) -> None:
        self._watch = watch.Watch(return_type=object)
        stream = self._watch.stream(
            self._call,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.options.watch_timeout,
            _request_timeout=(10, self.options.watch_timeout + 30),
            **self._params(),
        )
        try:
            for event in stream:
                kind, obj = event["type"], event["raw_object"]
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind != "BOOKMARK":
                    self._post(self._sink.event, self.scope, kind, self._typed(obj))
                if version:
                    self.resource_version = str(version)
                if self._stopped.is_set():
                    return
        except client.ApiException as exc:
            if exc.status == 410:
                raise Expired(str(exc)) from exc
            raise


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, client.ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
