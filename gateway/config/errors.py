"""The error every configuration problem that stops start-up (or a reload) is raised as."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class ConfigError(Exception):
    """Invalid configuration; each message line names the file, the object and the field path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def validation_messages(exc: ValidationError, prefix: str = "", base: str = "") -> list[str]:
    """``prefix: base.field.path[0].name: message`` for each error pydantic found."""
    lead = f"{prefix}: " if prefix else ""
    return [f"{lead}{field_path(e['loc'], base)}: {_message(e)}" for e in exc.errors()]


def field_path(loc: tuple[int | str, ...], base: str = "") -> str:
    """``('spec', 'rules', 0, 'path')`` -> ``spec.rules[0].path`` (after ``base``, if given)."""
    out = base
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(object)"


def _message(error: Any) -> str:
    """A pydantic error message without pydantic's prefixes."""
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if error["type"] == "missing":
        return "required field is missing"
    return message
