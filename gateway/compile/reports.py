"""What plugins add to a compiled configuration's status and dump: their own objects' conditions.

A plugin kind that routes point at (an InferencePool) has a status of its own that depends on
those routes: the Gateways whose accepted routes reference it are its parents. Compile hands each
registered producer the configuration and every backendRef of every route, with the Gateways
that accepted the route; the producer returns statuses (shown by ``ambient check``, ``/routes``
and ``/config_dump`` like route statuses) and a JSON-able view for ``/config_dump``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.snapshot import RouteStatus

if TYPE_CHECKING:
    from gateway.config.resources import ResourceSet


@dataclass(frozen=True, slots=True)
class BackendReference:
    """One backendRef of one route, and the Gateways (``namespace/name``) that accepted the
    route."""

    route_kind: str
    route_namespace: str
    route_name: str
    group: str
    kind: str
    namespace: str
    name: str
    gateways: frozenset[str]


@dataclass(frozen=True, slots=True)
class PluginReport:
    """A producer's result: statuses, and its part of ``/config_dump`` (under its name)."""

    statuses: Sequence[RouteStatus] = ()
    dump: Mapping[str, Any] = field(default_factory=dict)


ReportProducer = Callable[["ResourceSet", Sequence[BackendReference]], PluginReport]

_PRODUCERS: dict[str, ReportProducer] = {}


def register_report(name: str, producer: ReportProducer) -> None:
    """Run ``producer`` at every compile; raises ValueError if ``name`` is taken."""
    if name in _PRODUCERS:
        raise ValueError(f"status report {name!r} is already registered")
    _PRODUCERS[name] = producer


def run_reports(
    resources: ResourceSet, references: Sequence[BackendReference]
) -> tuple[list[RouteStatus], dict[str, Any]]:
    """Every producer's statuses, and their dumps by producer name."""
    statuses: list[RouteStatus] = []
    dumps: dict[str, Any] = {}
    for name, producer in _PRODUCERS.items():
        report = producer(resources, references)
        statuses += report.statuses
        if report.dump:
            dumps[name] = report.dump
    return statuses, dumps
