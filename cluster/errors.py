"""Errors of the cluster package."""

from __future__ import annotations


class ClusterError(Exception):
    """The Kubernetes API could not be used as configured (kubeconfig, discovery, access)."""
