"""Cluster mode: the gateway's resources from the Kubernetes API, its statuses written back."""

from gateway.controller.controller import ClusterController
from gateway.controller.options import CONTROLLER_NAME, ClusterOptions

__all__ = ["CONTROLLER_NAME", "ClusterController", "ClusterOptions"]
