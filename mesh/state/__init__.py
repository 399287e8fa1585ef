"""The workload store: Pods, Services, namespaces and policies from mesh.yaml."""

from mesh.state.registry import MeshState, Service, ServicePort, Workload, load_mesh, parse_mesh

__all__ = ["MeshState", "Service", "ServicePort", "Workload", "load_mesh", "parse_mesh"]
