"""Waypoint mode: the gateway as Istio ambient's L7 proxy, HBONE in and out (see runtime)."""
