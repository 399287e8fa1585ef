"""URLRewrite: replace the Host sent upstream and/or the path; the query string stays unchanged."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.filters.path import rewritten_path
from gateway.request import DirectResponse, RequestHead


@dataclass(frozen=True, slots=True)
class UrlRewrite:
    """A compiled rewrite; ``prefix`` is the rule's PathPrefix when ReplacePrefixMatch is used."""

    hostname: str | None = None
    full_path: str | None = None
    prefix: str | None = None
    prefix_replacement: str | None = None

    def apply(self, head: RequestHead) -> DirectResponse | None:
        """Rewrite the head in place."""
        if self.hostname is not None:
            head.set_header("Host", self.hostname)
        head.path = rewritten_path(head.path, self.full_path, self.prefix, self.prefix_replacement)
        return None
