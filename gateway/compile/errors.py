"""Why a route rule is dropped: a spec reason for the route's Accepted condition."""

from __future__ import annotations


class RuleInvalid(Exception):
    """A rule the gateway cannot implement; ``reason``: UnsupportedValue or IncompatibleFilters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
