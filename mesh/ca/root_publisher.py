"""The CA's root certificate as the ConfigMap ``ambient-ca-root`` in every namespace.

In cluster mode the CA writes its trust root (key ``root-cert.pem``) into each namespace, as
istiod publishes ``istio-ca-root-cert``: the ztunnels (``ambient-system``) and waypoints (in
their applications' namespaces) mount it to trust the CA, and nobody copies it by hand. A
ConfigMap with other content is corrected; other keys in it are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kubernetes import client
from kubernetes.client import ApiException

log = logging.getLogger(__name__)

ROOT_CONFIG_MAP = "ambient-ca-root"
ROOT_KEY = "root-cert.pem"
# What the CA's ClusterRole must grant for this: (apiGroup, resource, verbs, resourceNames).
RBAC_RULES = (
    ("", "configmaps", ("create",), ()),
    ("", "configmaps", ("get", "update"), (ROOT_CONFIG_MAP,)),
)


class RootPublisher:
    """Keeps the root ConfigMap in the namespaces it is given; counts its writes."""

    def __init__(self, api: client.ApiClient, root_pem: str) -> None:
        self._core = client.CoreV1Api(api)
        self.root_pem = root_pem
        self.published: set[str] = set()
        self.writes = 0

    def publish(self, namespaces: Iterable[str]) -> None:
        """Write the ConfigMap into each namespace not done yet (blocking: API calls). A failure
        is logged and tried again at the next call; a namespace that is gone is forgotten, so
        one created again with its name gets the ConfigMap again."""
        wanted = set(namespaces)
        self.published &= wanted
        for namespace in sorted(wanted - self.published):
            try:
                self._ensure(namespace)
            except (ApiException, OSError) as exc:
                log.warning(
                    "root certificate not published to %s/%s: %s", namespace, ROOT_CONFIG_MAP, exc
                )
                continue
            self.published.add(namespace)

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
