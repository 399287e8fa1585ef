"""Body-based routing: a pre-route stage that puts the JSON body's model into request headers.

A ``BodyBasedRouting`` policy (``inference.ambient.dev/v1alpha1``) attached to a Gateway or a
listener copies the body's ``model`` into ``X-Gateway-Model-Name`` and the model's base model into
``X-Gateway-Base-Model-Name``, so ordinary HTTPRoute header matches send each model to its pool.
Base models come from ConfigMaps labelled ``inference.networking.k8s.io/bbr-managed: "true"``
(``data.baseModel``, and ``data.adapters``: the adapter names, a YAML list or one per line or
comma); a model that is no known adapter is its own base. Only ``model`` is decoded; the body is
forwarded as it came. A body that is not JSON, or whose ``model`` is not a string, gets 400; a
body without ``model`` passes untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from gateway.backends.base import ResolveContext
from gateway.request import DirectResponse, error_response
from gateway.stages import PreRouteStage, StageRequest
from inference_ext.api import BodyBasedRouting
from inference_ext.request import RequestError, parse_body

BBR_LABEL = "inference.networking.k8s.io/bbr-managed"


@dataclass(frozen=True, slots=True)
class BodyBasedRoutingStage:
    """One policy, compiled: the header names and the adapter -> base model table."""

    model_header: str
    base_model_header: str
    base_models: Mapping[str, str]
    needs_body: bool = True

    def apply(self, request: StageRequest) -> DirectResponse | None:
        """Set the headers from the body (see the module docstring)."""
        try:
            model, _, _ = parse_body(request.body or b"")
        except RequestError as exc:
            return error_response(400, str(exc))
        if not model:
            return None
        head = request.head
        head.set_header(self.model_header, model)
        head.set_header(self.base_model_header, self.base_models.get(model, model))
        return None


def base_models(ctx: ResolveContext, namespace: str) -> dict[str, str]:
    """Adapter (and base model) -> base model, from the namespace's bbr-managed ConfigMaps."""
    table: dict[str, str] = {}
    for raw in ctx.list("", "ConfigMap", namespace):
        labels = (raw.get("metadata") or {}).get("labels") or {}
        if str(labels.get(BBR_LABEL, "")).lower() != "true":
            continue
        data = raw.get("data") or {}
        base = str(data.get("baseModel") or "").strip()
        if not base:
            continue
        table[base] = base
        for adapter in _names(data.get("adapters")):
            table[adapter] = base
    return table


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value)
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = None
    if isinstance(parsed, list):
        return [str(v).strip() for v in parsed if str(v).strip()]
    return [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]


def body_based_routing(raw: Mapping[str, Any], ctx: ResolveContext) -> PreRouteStage:
    """The stage kind's factory (a ValueError makes the policy Invalid)."""
    policy = BodyBasedRouting.model_validate(raw)
    return BodyBasedRoutingStage(
        policy.spec.model_header,
        policy.spec.base_model_header,
        base_models(ctx, policy.metadata.namespace),
    )
