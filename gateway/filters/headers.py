"""RequestHeaderModifier and ResponseHeaderModifier: set, add, remove; names case-insensitive."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.request import DirectResponse, RequestHead


@dataclass(frozen=True, slots=True)
class RequestHeaderModifier:
    """Edits the request headers sent upstream."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def apply(self, head: RequestHead) -> DirectResponse | None:
        """Set overwrites, add appends (``,``-joined), remove deletes."""
        for name, value in self.set:
            head.set_header(name, value)
        for name, value in self.add:
            head.add_header(name, value)
        for name in self.remove:
            head.remove_header(name)
        return None


@dataclass(frozen=True, slots=True)
class ResponseHeaderModifier:
    """Edits the response headers sent to the client."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: frozenset[str] = frozenset()  # lower-case names

    def apply(self, head: RequestHead, status: int, headers: list[tuple[str, str]]) -> None:
        """Set overwrites, add appends a header line, remove deletes."""
        if self.set or self.remove:
            drop = self.remove | {name.lower() for name, _ in self.set}
            headers[:] = [(n, v) for n, v in headers if n.lower() not in drop]
            headers.extend(self.set)
        headers.extend(self.add)
