"""List and watch calls for any resource type through the ``kubernetes`` client's APIs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from kubernetes import client

from cluster.resources import Resource

ListCall = Callable[..., Any]


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def list_call(api: client.ApiClient, resource: Resource, namespace: str | None) -> ListCall:
    """The client function that lists (and, with ``watch=True``, watches) ``resource``: in one
    namespace, or in all."""
    if resource.group:
        custom = client.CustomObjectsApi(api)
        if namespace is not None and resource.namespaced:
            return lambda **kw: custom.list_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, **kw
            )
        return lambda **kw: custom.list_cluster_custom_object(
            resource.group, resource.version, resource.plural, **kw
        )
    core = client.CoreV1Api(api)
    snake = _snake(resource.kind)
    if not resource.namespaced:
        call: ListCall = getattr(core, f"list_{snake}")
        return call
    if namespace is not None:
        namespaced: ListCall = getattr(core, f"list_namespaced_{snake}")
        return lambda **kw: namespaced(namespace, **kw)
    every: ListCall = getattr(core, f"list_{snake}_for_all_namespaces")
    return every


def list_page(call: ListCall, **params: Any) -> dict[str, Any]:
    """One list response as plain JSON (items stay dicts, as the API server sent them)."""
    response = call(_preload_content=False, **params)
    page: dict[str, Any] = json.loads(response.data)
    return page
