"""Per-request load balancing across a backend's endpoints, with passive health."""
