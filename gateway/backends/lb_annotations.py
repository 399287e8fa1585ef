"""The Service annotations that choose a backend's load-balancing policy.

``gateway.ambient.dev/load-balancer``
    ``least-request`` (default; power of two choices), ``round-robin``, ``random`` or
    ``consistent-hash``.
``gateway.ambient.dev/hash-on``
    for consistent hashing: ``header:<name>``, ``cookie:<name>`` or ``source-ip`` (default).
    Setting it alone implies ``consistent-hash``.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.lb.policy import LbPolicy

LB_ANNOTATION = "gateway.ambient.dev/load-balancer"
HASH_ANNOTATION = "gateway.ambient.dev/hash-on"
_LB_KINDS = {
    "least-request": "LeastRequest",
    "round-robin": "RoundRobin",
    "random": "Random",
    "consistent-hash": "ConsistentHash",
}


def policy_from_annotations(annotations: Mapping[str, str]) -> LbPolicy:
    """The LbPolicy a Service's annotations ask for; ValueError names the bad annotation."""
    lb = annotations.get(LB_ANNOTATION)
    hash_on = annotations.get(HASH_ANNOTATION)
    if lb is not None and lb not in _LB_KINDS:
        raise ValueError(
            f"metadata.annotations[{LB_ANNOTATION!r}]: {lb!r} is not one of {', '.join(_LB_KINDS)}"
        )
    if hash_on is not None:
        kind, _, name = hash_on.partition(":")
        if not (hash_on == "source-ip" or (kind in ("header", "cookie") and name)):
            raise ValueError(
                f"metadata.annotations[{HASH_ANNOTATION!r}]: {hash_on!r} is not "
                "'header:<name>', 'cookie:<name>' or 'source-ip'"
            )
        if lb not in (None, "consistent-hash"):
            raise ValueError(
                f"metadata.annotations[{HASH_ANNOTATION!r}]: needs "
                f"{LB_ANNOTATION}: consistent-hash, not {lb!r}"
            )
        return LbPolicy("ConsistentHash", hash_on)
    kind = _LB_KINDS[lb or "least-request"]
    return LbPolicy(kind, "source-ip" if kind == "ConsistentHash" else None)
