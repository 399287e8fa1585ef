"""deploy/ tests apply manifests to the API server double and load the installed plugins."""

from tests.fixtures.kube_api import kube, kube_api, kubeconfig  # noqa: F401  (fixtures)
from tests.fixtures.plugins import plugin_sandbox  # noqa: F401  (fixture)
