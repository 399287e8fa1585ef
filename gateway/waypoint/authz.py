"""L7 AuthorizationPolicy (security.istio.io/v1) as a waypoint enforces it, per request.

Policies apply through ``targetRefs``: to the waypoint Gateway (every destination it serves) or
to a Service (its destinations). Any matching DENY denies; otherwise, when ALLOW policies apply,
one must match. Rules are ORed; within a rule ``from``, ``to`` and each ``when`` are ANDed, the
entries of ``from`` / ``to`` ORed, and within an entry every field set must match (one of its
values), every ``not*`` field must not. Strings use Istio's forms: ``*`` (present), ``*x``,
``x*``, else exact. A denied request is answered 403 ``RBAC: access denied``, as Envoy does.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.request import DirectResponse, RequestHead
from gateway.stages import StageRequest
from mesh.rbac.authz import StringMatch

log = logging.getLogger(__name__)

DENIED = DirectResponse(403, [("content-type", "text/plain")], b"RBAC: access denied")

# A check of one request attribute: True when it holds.
Check = Callable[[RequestHead], bool]


class PolicyError(ValueError):
    """An AuthorizationPolicy the waypoint cannot enforce; the message names the field."""


@dataclass(frozen=True, slots=True)
class Rule:
    """Every check must hold."""

    checks: tuple[Check, ...]

    def matches(self, head: RequestHead) -> bool:
        """Whether the request satisfies the rule."""
        return all(check(head) for check in self.checks)


@dataclass(frozen=True, slots=True)
class L7Policy:
    """One compiled policy and what it targets."""

    namespace: str
    name: str
    action: str  # "ALLOW" | "DENY"
    rules: tuple[Rule, ...]
    gateways: frozenset[tuple[str, str]]
    services: frozenset[tuple[str, str]]

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def matches(self, head: RequestHead) -> bool:
        """Any rule matches (a policy without rules matches nothing)."""
        return any(rule.matches(head) for rule in self.rules)


@dataclass(frozen=True, slots=True)
class AuthzStage:
    """The pre-route stage of one destination: its policies, evaluated deny first."""

    deny: tuple[L7Policy, ...]
    allow: tuple[L7Policy, ...]
    needs_body: bool = False

    def apply(self, request: StageRequest) -> DirectResponse | None:
        """403 when a DENY matches, or when ALLOW policies exist and none matches."""
        head = request.head
        for policy in self.deny:
            if policy.matches(head):
                log.info("request denied by DENY policy %s", policy.key)
                return DENIED
        if self.allow and not any(policy.matches(head) for policy in self.allow):
            log.info("request matched no ALLOW policy")
            return DENIED
        return None


def stage_for(
    policies: Iterable[L7Policy], waypoint: tuple[str, str], service: tuple[str, str] | None
) -> AuthzStage | None:
    """The stage for a destination behind ``waypoint`` (a Service, or a Pod: ``service`` None),
    None without policies."""
    mine = [p for p in policies if waypoint in p.gateways or service in p.services]
    if not mine:
        return None
    return AuthzStage(
        tuple(p for p in mine if p.action == "DENY"),
        tuple(p for p in mine if p.action == "ALLOW"),
    )


Targets = tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]]]


def policy_targets(obj: Mapping[str, Any]) -> Targets:
    """The (Gateways, Services) a policy's ``targetRefs`` (or ``targetRef``) name."""
    meta = obj.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    spec = obj.get("spec") or {}
    refs = list(spec.get("targetRefs") or [])
    if spec.get("targetRef"):
        refs.append(spec["targetRef"])
    gateways, services = set(), set()
    for i, ref in enumerate(refs):
        kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
        target = (str(ref.get("namespace") or namespace), name)
        if kind == "Gateway":
            gateways.add(target)
        elif kind == "Service":
            services.add(target)
        else:
            raise PolicyError(
                f"AuthorizationPolicy {namespace}/{meta.get('name', '')}: "
                f"spec.targetRefs[{i}].kind must be Gateway or Service, got {kind!r}"
            )
    return frozenset(gateways), frozenset(services)


def deny_all(namespace: str, name: str, targets: Targets) -> L7Policy:
    """A DENY of every request to ``targets``: what an invalid policy enforces (fail closed)."""
    return L7Policy(namespace, name, "DENY", (Rule(()),), *targets)


def compile_policy(obj: Mapping[str, Any]) -> L7Policy | None:
    """A waypoint policy (one with ``targetRefs``), None for one ztunnel enforces."""
    meta = obj.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    where = f"AuthorizationPolicy {namespace}/{meta.get('name', '')}"
    spec = obj.get("spec") or {}
    gateways, services = policy_targets(obj)
    if not gateways and not services:
        return None
    action = str(spec.get("action", "ALLOW"))
    if action not in ("ALLOW", "DENY"):
        raise PolicyError(f"{where}: spec.action {action!r} is not supported (ALLOW or DENY)")
    rules = tuple(
        _rule(raw or {}, f"{where}: spec.rules[{i}]")
        for i, raw in enumerate(spec.get("rules") or [])
    )
    return L7Policy(namespace, str(meta.get("name", "")), action, rules, gateways, services)


def _rule(raw: Mapping[str, Any], where: str) -> Rule:
    checks: list[Check] = []
    sources = raw.get("from")
    if sources is not None:
        alts = [
            _source((s or {}).get("source") or {}, f"{where}.from[{i}]")
            for i, s in enumerate(sources)
        ]
        checks.append(_any(alts))
    targets = raw.get("to")
    if targets is not None:
        alts = [
            _operation((t or {}).get("operation") or {}, f"{where}.to[{i}]")
            for i, t in enumerate(targets)
        ]
        checks.append(_any(alts))
    for i, cond in enumerate(raw.get("when") or []):
        checks.append(_condition(cond or {}, f"{where}.when[{i}]"))
    return Rule(tuple(checks))


def _any(alternatives: Sequence[Rule]) -> Check:
    return lambda head: any(alt.matches(head) for alt in alternatives)


def _strings(values: Any) -> tuple[StringMatch, ...]:
    return tuple(StringMatch(str(v)) for v in values or ())


def _field(
    checks: list[Check], values: Any, negated: Any, get: Callable[[RequestHead], str | None]
) -> None:
    """Add ``one of values`` / ``none of negated`` checks on one attribute."""
    wanted, unwanted = _strings(values), _strings(negated)
    if wanted:
        checks.append(lambda head: any(m.matches(get(head)) for m in wanted))
    if unwanted:
        checks.append(lambda head: not any(m.matches(get(head)) for m in unwanted))


def _principal(head: RequestHead) -> str | None:
    return head.peer.principal if head.peer is not None else None


def _namespace(head: RequestHead) -> str | None:
    return head.peer.identity.namespace if head.peer is not None else None


def _source(src: Mapping[str, Any], where: str) -> Rule:
    checks: list[Check] = []
    _field(checks, src.get("principals"), src.get("notPrincipals"), _principal)
    _field(checks, src.get("namespaces"), src.get("notNamespaces"), _namespace)
    blocks = _cidrs(src.get("ipBlocks"), f"{where}.source.ipBlocks")
    not_blocks = _cidrs(src.get("notIpBlocks"), f"{where}.source.notIpBlocks")
    if blocks:
        checks.append(lambda head: _in(head.client_ip, blocks))
    if not_blocks:
        checks.append(lambda head: not _in(head.client_ip, not_blocks))
    for unsupported in ("requestPrincipals", "notRequestPrincipals"):
        if src.get(unsupported):
            raise PolicyError(f"{where}.source.{unsupported}: JWT principals are not supported")
    return Rule(tuple(checks))


def _operation(op: Mapping[str, Any], where: str) -> Rule:
    checks: list[Check] = []
    _field(checks, op.get("hosts"), op.get("notHosts"), lambda head: head.host)
    _field(checks, op.get("methods"), op.get("notMethods"), lambda head: head.method)
    _field(checks, op.get("paths"), op.get("notPaths"), lambda head: head.path)
    ports = _ports(op.get("ports"), f"{where}.operation.ports")
    not_ports = _ports(op.get("notPorts"), f"{where}.operation.notPorts")
    if ports:
        checks.append(lambda head: _port(head) in ports)
    if not_ports:
        checks.append(lambda head: _port(head) not in not_ports)
    return Rule(tuple(checks))


def _port(head: RequestHead) -> int:
    """The original destination port the tunnel named."""
    return head.peer.destination.address[1] if head.peer is not None else 0


def _condition(cond: Mapping[str, Any], where: str) -> Check:
    key = str(cond.get("key", ""))
    get: Callable[[RequestHead], str | None]
    if key.startswith("request.headers[") and key.endswith("]"):
        name = key[len("request.headers[") : -1].lower()
        get = lambda head: head.get(name)  # noqa: E731
    elif key == "source.principal":
        get = _principal
    elif key == "source.namespace":
        get = _namespace
    elif key == "source.ip":
        get = lambda head: head.client_ip  # noqa: E731
    elif key == "destination.port":
        get = lambda head: str(_port(head))  # noqa: E731
    elif key.startswith("request.auth.claims["):
        # No JWT is validated in waypoint mode: no claim is ever present.
        get = lambda head: None  # noqa: E731
    else:
        raise PolicyError(f"{where}.key: {key!r} is not a supported condition key")
    checks: list[Check] = []
    _field(checks, cond.get("values"), cond.get("notValues"), get)
    if not checks:
        raise PolicyError(f"{where}: values or notValues is required")
    return Rule(tuple(checks)).matches


def _cidrs(values: Any, where: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for v in values or ():
        try:
            out.append(ipaddress.ip_network(str(v), strict=False))
        except ValueError as exc:
            raise PolicyError(f"{where}: {v!r} is not an IP address or CIDR block") from exc
    return tuple(out)


def _in(ip: str, blocks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in block for block in blocks)


def _ports(values: Any, where: str) -> frozenset[int]:
    out = set()
    for v in values or ():
        text = str(v)
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise PolicyError(f"{where}: {v!r} is not a port number 1-65535")
        out.add(int(text))
    return frozenset(out)
