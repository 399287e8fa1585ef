"""Reading and writing the Kubernetes API: client, discovery, informers, status, leader lease.

Shared by the gateway and the mesh; it imports neither.
"""
