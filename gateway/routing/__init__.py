"""Per-port request routing: listener by Host, then the spec's precedence over route rules."""

from gateway.routing.match import MatchEntry, ValueMatch
from gateway.routing.router import Router, RouterBuilder

__all__ = ["MatchEntry", "Router", "RouterBuilder", "ValueMatch"]
