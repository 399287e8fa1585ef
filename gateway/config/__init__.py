"""The config edge: Kubernetes YAML in, a validated ResourceSet out."""

from gateway.config.errors import ConfigError
from gateway.config.loader import load_files, load_objects, load_text
from gateway.config.resources import ResourceSet

__all__ = ["ConfigError", "ResourceSet", "load_files", "load_objects", "load_text"]
