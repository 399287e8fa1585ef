"""A2ABackend: A2A agents served through the gateway, their cards pointing at it."""
