"""Envoy's ext_proc protocol, both sides: ``ambient epp`` (an endpoint picker server over a pool's
Scheduler) and the gateway's client for an external endpoint picker."""
