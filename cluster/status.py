"""Writing an object's status through the status subresource, with optimistic concurrency.

The write carries the resourceVersion the status was computed from; a 409 (someone wrote in
between) means: read the object again, compute again, retry. A status equal to the one the
object has is not written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import tenacity
from kubernetes import client

from cluster.informer import Obj
from cluster.resources import Resource

log = logging.getLogger("cluster.status")

StatusOf = Callable[[Obj], dict[str, Any] | None]  # the object's new status, None: leave it


class Conflict(Exception):
    """The object changed since it was read (409)."""


class StatusWriter:
    """Writes statuses with one client; counts writes, skips and conflicts."""

    def __init__(self, api: client.ApiClient, attempts: int = 5) -> None:
        self._custom = client.CustomObjectsApi(api)
        self.attempts = attempts
        self.writes = 0
        self.conflicts = 0

    def write(self, resource: Resource, obj: Obj, status_of: StatusOf) -> bool:
        """Write ``status_of(obj)`` as ``obj``'s status; True when something was written."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Conflict),
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_random(0, 0.05),
            reraise=True,
        )
        current = [obj]

        def attempt() -> bool:
            if retrying.statistics.get("attempt_number", 1) > 1:
                current[0] = self._get(resource, current[0])
            return self._put(resource, current[0], status_of)

        return bool(retrying(attempt))

    def _put(self, resource: Resource, obj: Obj, status_of: StatusOf) -> bool:
        status = status_of(obj)
        if status is None or status == obj.get("status"):
            return False
        body = {**obj, "status": status}
        meta = obj["metadata"]
        try:
            if resource.namespaced:
                self._custom.replace_namespaced_custom_object_status(
                    resource.group,
                    resource.version,
                    meta["namespace"],
                    resource.plural,
                    meta["name"],
                    body,
                )
            else:
                self._custom.replace_cluster_custom_object_status(
                    resource.group, resource.version, resource.plural, meta["name"], body
                )
        except client.ApiException as exc:
            if exc.status == 409:
                self.conflicts += 1
                raise Conflict(str(exc)) from exc
            raise
        self.writes += 1
        return True

    def _get(self, resource: Resource, obj: Obj) -> Obj:
        meta = obj["metadata"]
        fresh: Any
        if resource.namespaced:
            fresh = self._custom.get_namespaced_custom_object(
                resource.group, resource.version, meta["namespace"], resource.plural, meta["name"]
            )
        else:
            fresh = self._custom.get_cluster_custom_object(
                resource.group, resource.version, resource.plural, meta["name"]
            )
        return dict(fresh)
