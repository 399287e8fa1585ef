"""The admin API: readiness, Prometheus metrics, config dump and route status."""

from gateway.admin.app import create_admin_app
from gateway.admin.server import AdminServer, serve_admin

__all__ = ["AdminServer", "create_admin_app", "serve_admin"]
