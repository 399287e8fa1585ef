"""The rule the router returns for a misdirected request: the data path answers it with 421.

On a TLS port the SNI name chose the certificate and so the listener; when the Host names a
different listener of that port (HTTP/2 connection reuse does this), the spec says to answer
421 Misdirected Request so the client retries on a connection of its own. The router signals
it by returning :data:`MISDIRECTED`: an ordinary CompiledRule whose only request filter answers
421, so a data path that runs a rule's request filters needs no special case. A data path that
wants to tell it apart checks ``rule is MISDIRECTED`` (or ``rule.ref.kind == MISDIRECTED_KIND``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.request import DirectResponse, RequestHead, error_response
from gateway.snapshot import CompiledRule, RouteRef

MISDIRECTED_KIND = "Misdirected"


@dataclass(frozen=True, slots=True)
class MisdirectedRequest:
    """A request filter that answers 421, naming the Host and the TLS server name."""

    def apply(self, head: RequestHead) -> DirectResponse | None:
        """Always the 421 response."""
        return error_response(
            421,
            f"misdirected request: host {head.host!r} is not served on the connection made "
            f"for {head.sni!r}",
        )


MISDIRECTED = CompiledRule(
    ref=RouteRef(MISDIRECTED_KIND, "", "misdirected-request", -1),
    request_filters=(MisdirectedRequest(),),
)
