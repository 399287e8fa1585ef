"""Path replacement shared by RequestRedirect and URLRewrite."""

from __future__ import annotations


def replace_prefix(path: str, prefix: str, replacement: str) -> str:
    """ReplacePrefixMatch: swap the matched PathPrefix for ``replacement`` (spec table, §1.5.3)."""
    rest = path[len(prefix.rstrip("/")) :]
    return replacement.rstrip("/") + rest or "/"


def rewritten_path(path: str, full: str | None, prefix: str | None, replacement: str | None) -> str:
    """The new path: ReplaceFullPath, else ReplacePrefixMatch, else unchanged."""
    if full is not None:
        return full
    if prefix is not None and replacement is not None:
        return replace_prefix(path, prefix, replacement)
    return path
