"""The API client: from a kubeconfig file, or the ServiceAccount of the pod we run in."""

from __future__ import annotations

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from cluster.errors import ClusterError


def connect(kubeconfig: str | None) -> client.ApiClient:
    """An ApiClient for ``kubeconfig`` (None: in-cluster config); raises ClusterError."""
    try:
        if kubeconfig is None:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(config_file=kubeconfig)
    except (ConfigException, OSError) as exc:
        where = kubeconfig or "in-cluster config"
        raise ClusterError(f"cannot load Kubernetes client config from {where}: {exc}") from exc
