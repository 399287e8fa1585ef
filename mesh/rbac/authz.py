"""AuthorizationPolicy compiled to ztunnel's L4 model (rules > clauses > matches) and evaluated."""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh.errors import ConfigError
from mesh.identity.spiffe import SpiffeId

log = logging.getLogger(__name__)

ROOT_NAMESPACE = "istio-system"
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_L7_SOURCE = ("requestPrincipals", "notRequestPrincipals", "remoteIpBlocks", "notRemoteIpBlocks")
_L7_OPERATION = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")
_WHEN_KEYS = {
    "source.ip": "source_ips",
    "source.namespace": "namespaces",
    "source.principal": "principals",
    "destination.ip": "destination_ips",
    "destination.port": "destination_ports",
}


class Action(enum.Enum):
    """What a matching policy does."""

    ALLOW = "ALLOW"
    DENY = "DENY"


class Scope(enum.Enum):
    """Which workloads a policy applies to."""

    GLOBAL = "GLOBAL"
    NAMESPACE = "NAMESPACE"
    WORKLOAD_SELECTOR = "WORKLOAD_SELECTOR"


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Istio string match: ``*`` presence, ``*x`` suffix, ``x*`` prefix, else exact."""

    pattern: str

    def matches(self, value: str | None) -> bool:
        """Whether an (optionally absent) value matches."""
        if value is None or value == "":
            return False
        p = self.pattern
        if p == "*":
            return True
        if p.startswith("*"):
            return value.endswith(p[1:])
        if p.endswith("*"):
            return value.startswith(p[:-1])
        return value == p


@dataclass(frozen=True, slots=True)
class ConnectionAttrs:
    """The L4 facts authorization decides on."""

    source_identity: SpiffeId | None
    source_ip: str
    destination_ip: str
    destination_port: int


@dataclass(frozen=True, slots=True)
class Match:
    """Fields are ANDed, values within a field ORed; ``not_*`` values must all miss."""

    namespaces: tuple[StringMatch, ...] = ()
    not_namespaces: tuple[StringMatch, ...] = ()
    principals: tuple[StringMatch, ...] = ()
    not_principals: tuple[StringMatch, ...] = ()
    source_ips: tuple[IpNetwork, ...] = ()
    not_source_ips: tuple[IpNetwork, ...] = ()
    destination_ips: tuple[IpNetwork, ...] = ()
    not_destination_ips: tuple[IpNetwork, ...] = ()
    destination_ports: tuple[int, ...] = ()
    not_destination_ports: tuple[int, ...] = ()
    service_accounts: tuple[tuple[str, str], ...] = ()
    not_service_accounts: tuple[tuple[str, str], ...] = ()

    def is_empty(self) -> bool:
        """True when no field is set: such a match is skipped (never matches)."""
        return not any(getattr(self, name) for name in self.__slots__)

    def matches(self, conn: ConnectionAttrs) -> bool:
        """Whether the connection satisfies every set field."""
        ident = conn.source_identity
        principal = ident.principal if ident else None
        namespace = ident.namespace if ident else None
        sa = (ident.namespace, ident.service_account) if ident else None
        src = ipaddress.ip_address(conn.source_ip)
        dst = ipaddress.ip_address(conn.destination_ip)
        checks: list[tuple[Iterable[bool], bool]] = [
            ((m.matches(namespace) for m in self.namespaces), bool(self.namespaces)),
            ((m.matches(principal) for m in self.principals), bool(self.principals)),
            ((src in n for n in self.source_ips), bool(self.source_ips)),
            ((dst in n for n in self.destination_ips), bool(self.destination_ips)),
            (
                (conn.destination_port == p for p in self.destination_ports),
                bool(self.destination_ports),
            ),
            ((sa == s for s in self.service_accounts), bool(self.service_accounts)),
        ]
        for results, present in checks:
            if present and not any(results):
                return False
        negatives: list[Iterable[bool]] = [
            (m.matches(namespace) for m in self.not_namespaces),
            (m.matches(principal) for m in self.not_principals),
            (src in n for n in self.not_source_ips),
            (dst in n for n in self.not_destination_ips),
            (conn.destination_port == p for p in self.not_destination_ports),
            (sa == s for s in self.not_service_accounts),
        ]
        return not any(any(results) for results in negatives)


@dataclass(frozen=True, slots=True)
class Clause:
    """One of a rule's from / to / when parts; its matches are ORed, and none means match."""

    matches: tuple[Match, ...]

    def evaluate(self, conn: ConnectionAttrs) -> bool:
        """Whether any non-empty match fires (or the clause has no matches at all)."""
        if not self.matches:
            return True
        return any(not m.is_empty() and m.matches(conn) for m in self.matches)


@dataclass(frozen=True, slots=True)
class Rule:
    """Clauses ANDed; a rule without clauses matches everything."""

    clauses: tuple[Clause, ...]

    def evaluate(self, conn: ConnectionAttrs) -> bool:
        """Whether every clause fires."""
        return all(c.evaluate(conn) for c in self.clauses)


@dataclass(frozen=True, slots=True)
class Policy:
    """An AuthorizationPolicy as ztunnel enforces it."""

    name: str
    namespace: str
    action: Action
    scope: Scope
    rules: tuple[Rule, ...]
    selector: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def applies_to(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """Whether the policy is a candidate for a workload."""
        if self.scope is Scope.GLOBAL:
            return True
        if self.namespace != namespace:
            return False
        if self.scope is Scope.NAMESPACE:
            return True
        return all(labels.get(k) == v for k, v in self.selector.items())

    def matches(self, conn: ConnectionAttrs) -> bool:
        """Any rule fires; a policy with no rules never matches."""
        return any(r.evaluate(conn) for r in self.rules)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of authorization, naming the deciding policy."""

    allowed: bool
    reason: str


class Authorizer:
    """Evaluates the candidate policies for a destination workload, deny first."""

    def __init__(self, policies: Iterable[Policy]) -> None:
        self.policies = tuple(policies)

    def check(
        self,
        namespace: str,
        labels: Mapping[str, str],
        conn: ConnectionAttrs,
        waypoints: frozenset[SpiffeId] = frozenset(),
    ) -> Decision:
        """Any matching DENY denies; no ALLOW allows; else a matching ALLOW is needed.

        ``waypoints`` are the identities of the waypoints in front of the workload: istiod
        adds an ALLOW for them (``istio_allow_waypoint_<ns>_<name>``), so traffic that passed
        a waypoint's L7 policy is not refused again for lacking the client's principal.
        """
        candidates = [p for p in self.policies if p.applies_to(namespace, labels)]
        for p in candidates:
            if p.action is Action.DENY and p.matches(conn):
                if p.dry_run:
                    log.info("dry-run DENY policy %s would deny %s", p.key, conn)
                    continue
                return Decision(False, f"denied by DENY policy {p.key}")
        allows = [p for p in candidates if p.action is Action.ALLOW]
        enforced = [p for p in allows if not p.dry_run]
        for p in allows:
            if p.dry_run and p.matches(conn):
                log.info("dry-run ALLOW policy %s would allow %s", p.key, conn)
        if not enforced:
            return Decision(True, "no ALLOW policies")
        if conn.source_identity is not None and conn.source_identity in waypoints:
            return Decision(True, "allowed as the workload's waypoint")
        for p in enforced:
            if p.matches(conn):
                return Decision(True, f"allowed by ALLOW policy {p.key}")
        return Decision(False, "no ALLOW policy matched")


def compile_policy(obj: Mapping[str, Any]) -> Policy | None:
    """Translate an AuthorizationPolicy as istiod does for ztunnel; None when ztunnel ignores it."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    namespace = str(meta.get("namespace") or "default")
    where = f"AuthorizationPolicy {namespace}/{name}"
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: spec must be a mapping")
    if spec.get("targetRef") or spec.get("targetRefs"):
        return None  # waypoint-attached: enforced by the waypoint, not ztunnel
    raw_action = str(spec.get("action", "ALLOW"))
    if raw_action in ("CUSTOM", "AUDIT"):
        log.warning("%s: ztunnel does not support the %s action; ignored", where, raw_action)
        return None
    if raw_action not in ("ALLOW", "DENY"):
        raise ConfigError(f"{where}: spec.action must be ALLOW or DENY, got {raw_action!r}")
    action = Action(raw_action)
    selector = ((spec.get("selector") or {}).get("matchLabels")) or {}
    if selector:
        scope = Scope.WORKLOAD_SELECTOR
    elif namespace == ROOT_NAMESPACE:
        scope = Scope.GLOBAL
    else:
        scope = Scope.NAMESPACE
    annotations = meta.get("annotations") or {}
    dry_run = str(annotations.get("istio.io/dry-run", "false")).lower() == "true"
    rules: list[Rule] = []
    for index, raw in enumerate(spec.get("rules") or []):
        rule = _compile_rule(raw or {}, action, namespace, f"{where}: spec.rules[{index}]")
        if rule is not None:
            rules.append(rule)
    return Policy(
        name=name,
        namespace=namespace,
        action=action,
        scope=scope,
        rules=tuple(rules),
        selector={str(k): str(v) for k, v in selector.items()},
        dry_run=dry_run,
    )


def _compile_rule(raw: Mapping[str, Any], action: Action, ns: str, where: str) -> Rule | None:
    has_l7 = False
    clauses: list[Clause] = []
    sources = raw.get("from")
    if sources is not None:
        matches = []
        for i, item in enumerate(sources):
            src = (item or {}).get("source") or {}
            has_l7 |= any(src.get(k) for k in _L7_SOURCE)
            matches.append(_source_match(src, ns, f"{where}.from[{i}].source"))
        clauses.append(Clause(tuple(matches)))
    targets = raw.get("to")
    if targets is not None:
        matches = []
        for i, item in enumerate(targets):
            op = (item or {}).get("operation") or {}
            has_l7 |= any(op.get(k) for k in _L7_OPERATION)
            matches.append(
                Match(
                    destination_ports=_ports(op.get("ports"), f"{where}.to[{i}].operation.ports"),
                    not_destination_ports=_ports(
                        op.get("notPorts"), f"{where}.to[{i}].operation.notPorts"
                    ),
                )
            )
        clauses.append(Clause(tuple(matches)))
    for i, cond in enumerate(raw.get("when") or []):
        key = str((cond or {}).get("key", ""))
        target = _WHEN_KEYS.get(key)
        if target is None:
            has_l7 = True
            clauses.append(Clause((Match(),)))
            continue
        path = f"{where}.when[{i}]"
        fields = {
            **_when_fields(target, cond.get("values"), False, path),
            **_when_fields(target, cond.get("notValues"), True, path),
        }
        clauses.append(Clause((Match(**fields),)))
    if has_l7 and action is Action.ALLOW:
        return None  # an ALLOW rule with L7 attributes can never be satisfied at L4
    return Rule(tuple(clauses))


def _source_match(src: Mapping[str, Any], ns: str, where: str) -> Match:
    return Match(
        principals=_strings(src.get("principals")),
        not_principals=_strings(src.get("notPrincipals")),
        namespaces=_strings(src.get("namespaces")),
        not_namespaces=_strings(src.get("notNamespaces")),
        source_ips=_cidrs(src.get("ipBlocks"), f"{where}.ipBlocks"),
        not_source_ips=_cidrs(src.get("notIpBlocks"), f"{where}.notIpBlocks"),
        service_accounts=_service_accounts(src.get("serviceAccounts"), ns),
        not_service_accounts=_service_accounts(src.get("notServiceAccounts"), ns),
    )


def _when_fields(target: str, values: Any, negate: bool, where: str) -> dict[str, Any]:
    if not values:
        return {}
    if target == "destination_ports":
        parsed: tuple[Any, ...] = _ports(values, f"{where}.values")
    elif target in ("source_ips", "destination_ips"):
        parsed = _cidrs(values, f"{where}.values")
    else:
        parsed = _strings(values)
    return {f"not_{target}" if negate else target: parsed}


def _strings(values: Any) -> tuple[StringMatch, ...]:
    return tuple(StringMatch(str(v)) for v in values or ())


def _cidrs(values: Any, where: str) -> tuple[IpNetwork, ...]:
    out = []
    for v in values or ():
        try:
            out.append(ipaddress.ip_network(str(v), strict=False))
        except ValueError as exc:
            raise ConfigError(f"{where}: {v!r} is not an IP address or CIDR block") from exc
    return tuple(out)


def _ports(values: Any, where: str) -> tuple[int, ...]:
    out = []
    for v in values or ():
        try:
            port = int(str(v))
        except ValueError as exc:
            raise ConfigError(f"{where}: {v!r} is not a port number") from exc
        if not 0 < port < 65536:
            raise ConfigError(f"{where}: {port} is out of range 1-65535")
        out.append(port)
    return tuple(out)


def _service_accounts(values: Any, ns: str) -> tuple[tuple[str, str], ...]:
    out = []
    for v in values or ():
        text = str(v)
        if "/" in text:
            a, b = text.split("/", 1)
            out.append((a, b))
        else:
            out.append((ns, text))
    return tuple(out)
