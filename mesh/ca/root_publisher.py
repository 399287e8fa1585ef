"""The CA's root certificate as the ConfigMap ``ambient-ca-root`` in every namespace.

In cluster mode the CA writes its trust root (key ``root-cert.pem``) into each namespace, as
istiod publishes ``istio-ca-root-cert``: the ztunnels (``ambient-system``) and waypoints (in
their applications' namespaces) mount it to trust the CA, and nobody copies it by hand. A
ConfigMap with other content is corrected; other keys in it are kept. The CA watches these
ConfigMaps (a ``metadata.name`` field selector, so RBAC can name them) and writes one again when
it is deleted or edited after publishing (:meth:`RootPublisher.check`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client import ApiException

log = logging.getLogger(__name__)

ROOT_CONFIG_MAP = "ambient-ca-root"
ROOT_KEY = "root-cert.pem"
FIELD_SELECTOR = f"metadata.name={ROOT_CONFIG_MAP}"  # what the CA's watch of them asks for
# What the CA's ClusterRole must grant for this: (apiGroup, resource, verbs, resourceNames).
# list and watch by name are authorized because those requests carry FIELD_SELECTOR.
RBAC_RULES = (
    ("", "configmaps", ("create",), ()),
    ("", "configmaps", ("get", "list", "update", "watch"), (ROOT_CONFIG_MAP,)),
)


class RootPublisher:
    """Keeps the root ConfigMap in the namespaces it is given; counts its writes."""

    def __init__(self, api: client.ApiClient, root_pem: str) -> None:
        self._core = client.CoreV1Api(api)
        self.root_pem = root_pem
        self.published: set[str] = set()
        self.writes = 0

    def publish(self, namespaces: Iterable[str]) -> set[str]:
        """Write the ConfigMap into each namespace not done yet (blocking: API calls); returns
        the namespaces where that failed (logged, tried again at the next call). A namespace
        that is gone is forgotten, so one created again with its name gets the ConfigMap again."""
        wanted = set(namespaces)
        self.published &= wanted
        failed: set[str] = set()
        for namespace in sorted(wanted - self.published):
            try:
                self._ensure(namespace)
            except (ApiException, OSError) as exc:
                log.warning(
                    "root certificate not published to %s/%s: %s", namespace, ROOT_CONFIG_MAP, exc
                )
                failed.add(namespace)
                continue
            self.published.add(namespace)
        return failed

    def check(self, copies: Iterable[Mapping[str, Any]]) -> set[str]:
        """Forget the published namespaces whose ConfigMap is not among ``copies`` (the CA's
        watch of them) with the root in it, so the next ``publish`` writes it again; returns
        those namespaces."""
        right = {
            str((c.get("metadata") or {}).get("namespace"))
            for c in copies
            if (c.get("data") or {}).get(ROOT_KEY) == self.root_pem
        }
        stale = self.published - right
        self.published -= stale
        for namespace in sorted(stale):
            log.info("%s/%s deleted or edited: publishing it again", namespace, ROOT_CONFIG_MAP)
        return stale

    def _ensure(self, namespace: str) -> None:
        try:
            current = self._core.read_namespaced_config_map(ROOT_CONFIG_MAP, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(
                    name=ROOT_CONFIG_MAP, labels={"app.kubernetes.io/managed-by": "ambient-ca"}
                ),
                data={ROOT_KEY: self.root_pem},
            )
            self._core.create_namespaced_config_map(namespace, body)
            self.writes += 1
            log.info("published the root certificate to %s/%s", namespace, ROOT_CONFIG_MAP)
            return
        if (current.data or {}).get(ROOT_KEY) != self.root_pem:
            current.data = {**(current.data or {}), ROOT_KEY: self.root_pem}
            self._core.replace_namespaced_config_map(ROOT_CONFIG_MAP, namespace, current)
            self.writes += 1
            log.info("corrected the root certificate in %s/%s", namespace, ROOT_CONFIG_MAP)
