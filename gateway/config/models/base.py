"""Shared pieces of the config models: the base class, metadata, field checks, unknown fields."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from typing import Annotated, get_args

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GATEWAY_GROUP = "gateway.networking.k8s.io"

_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")


def check_header_name(value: str) -> str:
    """An HTTP header or query parameter name (RFC 7230 token)."""
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid header or query parameter name")
    return value


Port = Annotated[int, Field(ge=1, le=65535)]


def check_hostname(value: str) -> str:
    """A Gateway API Hostname: lower case, optional leading ``*.``, no port, no IP."""
    if not 1 <= len(value) <= 253 or not _HOSTNAME.match(value):
        raise ValueError(f"{value!r} is not a valid hostname (lower case, optional leading '*.')")
    return value


def check_path_value(value: str) -> str:
    """Path rules for Exact and PathPrefix values and rewrite paths."""
    if not value.startswith("/"):
        raise ValueError("must start with '/'")
    for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if bad in value:
            raise ValueError(f"must not contain {bad!r}")
    if value.endswith(("/.", "/..")):
        raise ValueError("must not end with '/.' or '/..'")
    if not _PATH_CHARS.match(value):
        raise ValueError("contains characters not allowed in a path")
    return value


class Model(BaseModel):
    """camelCase aliases as in the YAML, immutable; unknown fields kept for unknown_fields()."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="allow"
    )


_NOT_CHECKED = frozenset({"apiVersion", "kind", "metadata", "status"})


def unknown_fields(model: BaseModel, path: str = "") -> Iterator[str]:
    """Field paths present in the YAML but not in the schema (typos, newer API fields)."""
    for key in model.model_extra or {}:
        if path or key not in _NOT_CHECKED:
            yield f"{path}.{key}" if path else key
    for name, alias in _nested_fields(type(model)):
        if not path and name == "metadata":
            continue
        value = getattr(model, name)
        where = f"{path}.{alias}" if path else alias
        if isinstance(value, BaseModel):
            yield from unknown_fields(value, where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from unknown_fields(item, f"{where}[{i}]")


@cache
def _nested_fields(cls: type[BaseModel]) -> tuple[tuple[str, str], ...]:
    """(name, YAML name) of the fields of a model class that can hold models."""
    return tuple(
        (name, info.alias or name)
        for name, info in cls.model_fields.items()
        if _holds_model(info.annotation)
    )


def _holds_model(annotation: object) -> bool:
    """Whether a type annotation mentions a pydantic model."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(arg) for arg in get_args(annotation))


class Metadata(Model):
    """Object metadata: name, namespace (default ``default``), labels, age."""

    name: str = Field(min_length=1)
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: datetime | None = None
    generation: int = 1
