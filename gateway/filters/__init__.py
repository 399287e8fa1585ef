"""Compiled HTTPRoute filters: request filters edit or answer requests; response filters edit."""
