"""How upstream names, resource URIs and request ids look to the client, and back.

Tools and prompts become ``<target>_<name>`` when names are prefixed (``Always``, or
``Conditional`` with more than one target); a name that would break the SEP-986 rule (1-128
characters of ``[A-Za-z0-9_.-]``) is left out and reported rather than cut. Resource URIs become
``<target>+<uri>`` (a valid URI scheme when the URI's scheme is). Requests an upstream sends the
client get the id ``<target>/<n|s>/<id>`` so the client's answer finds its way back with the id's
type intact. Target names hold none of ``_``, ``+`` and ``/``, so every form splits at its first
separator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentgw.mcp.jsonrpc import Id

SEPARATOR = "_"
URI_SEPARATOR = "+"
MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class IdError(ValueError):
    """A response id the gateway never issued."""


def valid_name(name: str) -> bool:
    """True when ``name`` follows the tool-name rule (1-128 of ``[A-Za-z0-9_.-]``)."""
    return _NAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Naming:
    """The client-side names of one MCPBackend's targets."""

    targets: tuple[str, ...]
    prefixed: bool

    @classmethod
    def of(cls, targets: tuple[str, ...], mode: str) -> Naming:
        """The naming of ``targets`` under ``prefixMode`` ``mode``."""
        prefixed = mode == "Always" or (mode == "Conditional" and len(targets) > 1)
        return cls(targets, prefixed)

    @property
    def sole(self) -> str | None:
        """The one target, when there is only one."""
        return self.targets[0] if len(self.targets) == 1 else None

    def expose(self, target: str, name: str) -> str | None:
        """The client's name of ``target``'s ``name``; None when it would break the rule."""
        exposed = f"{target}{SEPARATOR}{name}" if self.prefixed else name
        return exposed if valid_name(exposed) else None

    def expose_uri(self, target: str, uri: str) -> str:
        """The client's URI (or URI template) of ``target``'s ``uri``."""
        return f"{target}{URI_SEPARATOR}{uri}" if self.prefixed else uri

    def owner_uri(self, uri: str) -> tuple[str, str] | None:
        """(target, upstream URI) of a client's URI, when the URI alone tells it."""
        if self.prefixed:
            target, sep, rest = uri.partition(URI_SEPARATOR)
            return (target, rest) if sep and rest and target in self.targets else None
        return (self.targets[0], uri) if len(self.targets) == 1 else None


def downstream_id(target: str, id: Id) -> str:
    """The id the client sees on a request ``target`` sent it."""
    return f"{target}/{'s' if isinstance(id, str) else 'n'}/{id}"


def upstream_id(id: Id | None) -> tuple[str, Id]:
    """(target, original id) of the client's answer to a forwarded request; IdError if foreign."""
    if not isinstance(id, str):
        raise IdError(f"the id {id!r} is not one the gateway sent")
    target, _, rest = id.partition("/")
    kind, _, original = rest.partition("/")
    if not target or kind not in ("n", "s") or (kind == "n" and not _is_int(original)):
        raise IdError(f"the id {id!r} is not one the gateway sent")
    return target, int(original) if kind == "n" else original


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()
