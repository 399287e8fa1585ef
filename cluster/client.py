"""The API client: from a kubeconfig file, or the ServiceAccount of the pod we run in.

In a pod, the API server's address comes from ``KUBERNETES_SERVICE_HOST``/``_PORT`` and the
token and CA from the ServiceAccount directory, ``/var/run/secrets/kubernetes.io/serviceaccount``
unless ``AMBIENT_SERVICE_ACCOUNT_DIR`` names another (a token projected elsewhere; tests). The
token file is read again every minute, so a rotated projected token is picked up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader

from cluster.errors import ClusterError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_ACCOUNT_ENV = "AMBIENT_SERVICE_ACCOUNT_DIR"


def service_account_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the pod's ``token`` and ``ca.crt`` are."""
    value = (os.environ if environ is None else environ).get(SERVICE_ACCOUNT_ENV)
    return Path(value) if value else SERVICE_ACCOUNT_DIR


def connect(kubeconfig: str | None) -> client.ApiClient:
    """An ApiClient for ``kubeconfig`` (None: in-cluster config); raises ClusterError."""
    try:
        if kubeconfig is None:
            directory = service_account_dir()
            configuration = client.Configuration()
            loader = InClusterConfigLoader(
                token_filename=str(directory / "token"), cert_filename=str(directory / "ca.crt")
            )
            try:
                loader.load_and_set(configuration)
            except ConfigException as exc:
                raise ConfigException(f"{exc} (service account directory {directory})") from exc
            return client.ApiClient(configuration)
        return config.new_client_from_config(config_file=kubeconfig)
    except (ConfigException, OSError) as exc:
        where = kubeconfig or "in-cluster config"
        raise ClusterError(f"cannot load Kubernetes client config from {where}: {exc}") from exc
