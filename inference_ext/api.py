"""The inference extension's resources, validated at load like the gateway's own kinds.

- ``v1`` Pod: in standalone mode, the model-server pods a pool selects (labels, ``status.podIP``,
  the ``Ready`` condition). ``spec`` is not read.
- InferencePool: ``inference.networking.k8s.io/v1`` and the older
  ``inference.networking.x-k8s.io/v1alpha2`` shape; both become one :class:`PoolSpec`.
- InferenceObjective (``inference.networking.x-k8s.io/v1alpha2``): a priority for a pool's
  requests that name it in ``x-gateway-inference-objective``.
- EndpointPicker (``inference.ambient.dev/v1alpha1``, our own kind): the picker's configuration
  for one pool — scorer weights, scrape interval, metric names; defaults when absent.
- BodyBasedRouting (``inference.ambient.dev/v1alpha1``): a pre-route policy that copies the body's
  ``model`` (and its base model) into headers routes can match.
- InferenceModelRewrite (``inference.networking.x-k8s.io/v1alpha2``): a pool's weighted rewrites
  of the body's ``model`` (canaries, version splits); the annotation
  ``inference.ambient.dev/session-key`` makes a session keep its version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.duration import parse_duration
from gateway.config.models import Metadata, Model
from gateway.config.models.base import Port
from gateway.config.models.policy import PolicyTargetRef

POOL_GROUP = "inference.networking.k8s.io"
X_GROUP = "inference.networking.x-k8s.io"
AMBIENT_GROUP = "inference.ambient.dev"


# -- Pod -----------------------------------------------------------------------------------------


class PodCondition(Model):
    """One ``status.conditions[]`` entry."""

    type: str
    status: str


class PodStatus(Model):
    """What a pool reads of a pod's status."""

    pod_ip: str | None = Field(default=None, alias="podIP")
    phase: str | None = None
    conditions: list[PodCondition] = Field(default_factory=list)


class Pod(Model):
    """A ``v1`` Pod (only metadata and status are read)."""

    metadata: Metadata
    spec: dict[str, Any] = Field(default_factory=dict)
    status: PodStatus = Field(default_factory=PodStatus)

    @property
    def ready(self) -> bool:
        """Has an IP, and its ``Ready`` condition is True (absent: ready unless Failed)."""
        if not self.status.pod_ip:
            return False
        for condition in self.status.conditions:
            if condition.type == "Ready":
                return condition.status == "True"
        return self.status.phase not in ("Failed", "Succeeded", "Pending")


# -- InferencePool ---------------------------------------------------------------------------------


class PortNumber(Model):
    """``{number: N}``."""

    number: Port


class LabelSelector(Model):
    """``selector.matchLabels``."""

    match_labels: dict[str, str] = Field(min_length=1, max_length=64)


class EndpointPickerRef(Model):
    """``spec.endpointPickerRef``: the external endpoint picker's Service."""

    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1)
    port: PortNumber | None = None
    failure_mode: Literal["FailOpen", "FailClose"] = "FailClose"

    @model_validator(mode="after")
    def _port_for_services(self) -> EndpointPickerRef:
        if self.kind == "Service" and self.port is None:
            raise ValueError("port: required when kind is Service")
        return self


class InferencePoolSpec(Model):
    """``inference.networking.k8s.io/v1`` InferencePool spec."""

    selector: LabelSelector
    target_ports: list[PortNumber] = Field(min_length=1, max_length=8)
    app_protocol: Literal["http", "kubernetes.io/h2c"] | None = None
    endpoint_picker_ref: EndpointPickerRef | None = None

    @field_validator("target_ports")
    @classmethod
    def _unique(cls, ports: list[PortNumber]) -> list[PortNumber]:
        numbers = [p.number for p in ports]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"port numbers must be unique, got {numbers}")
        return ports


class InferencePool(Model):
    """``inference.networking.k8s.io/v1`` InferencePool."""

    metadata: Metadata
    spec: InferencePoolSpec


class ExtensionRefAlpha(Model):
    """v1alpha2 ``spec.extensionRef``."""

    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1)
    port_number: Port = 9002
    failure_mode: Literal["FailOpen", "FailClose"] = "FailClose"


class InferencePoolAlphaSpec(Model):
    """``inference.networking.x-k8s.io/v1alpha2`` InferencePool spec."""

    selector: dict[str, str] = Field(min_length=1, max_length=64)
    target_port_number: Port
    extension_ref: ExtensionRefAlpha | None = None


class InferencePoolAlpha(Model):
    """``inference.networking.x-k8s.io/v1alpha2`` InferencePool (the shape before v1)."""

    metadata: Metadata
    spec: InferencePoolAlphaSpec


@dataclass(frozen=True, slots=True)
class PickerRef:
    """Where an external endpoint picker listens, and what to do when it does not answer."""

    group: str
    kind: str
    name: str
    port: int
    failure_mode: str  # "FailOpen" | "FailClose"


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """An InferencePool of either version, as the rest of the extension reads it."""

    namespace: str
    name: str
    selector: tuple[tuple[str, str], ...]
    ports: tuple[int, ...]
    h2c: bool
    picker: PickerRef | None
    version: str  # "v1" | "v1alpha2"

    def selects(self, labels: dict[str, str]) -> bool:
        """Whether a pod with ``labels`` is in the pool (every selector label matches)."""
        return all(labels.get(key) == value for key, value in self.selector)


def pool_spec(pool: InferencePool | InferencePoolAlpha) -> PoolSpec:
    """Either version's object as a :class:`PoolSpec`."""
    meta = pool.metadata
    if isinstance(pool, InferencePool):
        spec = pool.spec
        ref = spec.endpoint_picker_ref
        picker = (
            PickerRef(
                ref.group, ref.kind, ref.name, ref.port.number if ref.port else 0, ref.failure_mode
            )
            if ref is not None
            else None
        )
        return PoolSpec(
            meta.namespace,
            meta.name,
            tuple(sorted(spec.selector.match_labels.items())),
            tuple(p.number for p in spec.target_ports),
            spec.app_protocol == "kubernetes.io/h2c",
            picker,
            "v1",
        )
    alpha = pool.spec
    old = alpha.extension_ref
    return PoolSpec(
        meta.namespace,
        meta.name,
        tuple(sorted(alpha.selector.items())),
        (alpha.target_port_number,),
        False,
        PickerRef(old.group, old.kind, old.name, old.port_number, old.failure_mode)
        if old is not None
        else None,
        "v1alpha2",
    )


# -- InferenceObjective ----------------------------------------------------------------------------


class PoolRef(Model):
    """``spec.poolRef``."""

    group: str = POOL_GROUP
    kind: str = "InferencePool"
    name: str = Field(min_length=1)


class InferenceObjectiveSpec(Model):
    """``spec``: a priority (higher first; below 0 sheddable) for requests to ``poolRef``."""

    priority: int | None = None
    pool_ref: PoolRef


class InferenceObjective(Model):
    """``inference.networking.x-k8s.io/v1alpha2`` InferenceObjective."""

    metadata: Metadata
    spec: InferenceObjectiveSpec


# -- EndpointPicker (ours) -------------------------------------------------------------------------


class MetricNames(Model):
    """Model-server metric names; unset ones come from the engine's preset."""

    waiting: str | None = None
    running: str | None = None
    kv_cache: str | None = None
    lora_info: str | None = None
    cache_config: str | None = None


class ScorerWeights(Model):
    """Weights of the scorers (0 turns one off)."""

    queue: float = Field(default=2.0, ge=0)
    kv_cache: float = Field(default=2.0, ge=0)
    prefix_cache: float = Field(default=3.0, ge=0)
    lora: float = Field(default=1.0, ge=0)
    inflight: float = Field(default=1.0, ge=0)


class PrefixCacheConfig(Model):
    """The approximate prefix-cache index."""

    # 64 tokens (~256 bytes of prompt) a block: a quarter of the hashing of vLLM's 16-token
    # blocks for the same reach, at no loss for routing (bench.picker measures the decision).
    block_size_tokens: int = Field(default=64, ge=1, le=1024)
    max_prefix_blocks: int = Field(default=128, ge=1, le=4096)  # 8k tokens of prompt
    # Blocks remembered per server when its metrics do not say how many its KV cache holds.
    lru_capacity_per_server: int = Field(default=8192, ge=1)


class SaturationConfig(Model):
    """When a server (and the pool, on average) counts as saturated."""

    queue_depth_threshold: float = Field(default=5.0, gt=0)
    kv_cache_util_threshold: float = Field(default=0.8, gt=0, le=1)


class FlowControlConfig(Model):
    """The queue requests wait in while the pool is saturated."""

    max_queued: int = Field(default=1024, ge=0)
    queue_ttl: str = Field(default="30s", alias="queueTTL")

    @field_validator("queue_ttl")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class EndpointPickerSpec(Model):
    """Our picker's configuration for one pool."""

    pool_ref: PoolRef
    engine: Literal["vllm", "sglang", "trtllm"] = "vllm"
    metrics: MetricNames = Field(default_factory=MetricNames)
    scrape_interval: str = "50ms"
    stale_after: str = "2s"
    scorers: ScorerWeights = Field(default_factory=ScorerWeights)
    prefix_cache: PrefixCacheConfig = Field(default_factory=PrefixCacheConfig)
    saturation: SaturationConfig = Field(default_factory=SaturationConfig)
    flow_control: FlowControlConfig = Field(default_factory=FlowControlConfig)
    fallbacks: int = Field(default=2, ge=0, le=16)
    # Requests in flight at which a server's inflight score reaches 0 (about its batch size).
    inflight_capacity: float = Field(default=16.0, gt=0)
    # With endpointPickerRef: how long the gateway waits for the external picker's decision
    # before its failureMode applies (longer than that picker's queue TTL if requests wait there).
    picker_timeout: str = "5s"

    @field_validator("scrape_interval", "stale_after", "picker_timeout")
    @classmethod
    def _durations(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be more than 0s")
        return value


class EndpointPicker(Model):
    """``inference.ambient.dev/v1alpha1`` EndpointPicker."""

    metadata: Metadata
    spec: EndpointPickerSpec


# -- BodyBasedRouting (ours) -----------------------------------------------------------------------


class BodyBasedRoutingSpec(Model):
    """Where the body's model goes."""

    target_refs: list[PolicyTargetRef] = Field(min_length=1)
    model_header: str = "X-Gateway-Model-Name"
    base_model_header: str = "X-Gateway-Base-Model-Name"


class BodyBasedRouting(Model):
    """``inference.ambient.dev/v1alpha1`` BodyBasedRouting."""

    metadata: Metadata
    spec: BodyBasedRoutingSpec


# -- InferenceModelRewrite -------------------------------------------------------------------------

SESSION_KEY_ANNOTATION = "inference.ambient.dev/session-key"
SESSION_SOURCES = ("header", "cookie", "body")
MAX_REWRITE_WEIGHT = 1_000_000


class ModelMatch(Model):
    """``matches[].model``: the incoming model, matched exactly."""

    type: Literal["Exact"] = "Exact"
    value: str = Field(min_length=1)


class RewriteMatch(Model):
    """One ``rules[].matches[]`` entry (entries are ORed)."""

    model: ModelMatch


class RewriteTarget(Model):
    """One ``rules[].targets[]`` entry: the model to send, and its relative weight."""

    model_rewrite: str = Field(min_length=1)
    # The spec says 1..1,000,000; 0 is also allowed here: a target only a forcing header (or a
    # weight override) reaches, e.g. a canary before its rollout starts.
    weight: int | None = Field(default=None, ge=0, le=MAX_REWRITE_WEIGHT)


class RewriteRule(Model):
    """One ``spec.rules[]`` entry: an empty ``matches`` matches every model."""

    matches: list[RewriteMatch] = Field(default_factory=list)
    targets: list[RewriteTarget] = Field(min_length=1)

    @field_validator("targets")
    @classmethod
    def _all_or_none(cls, targets: list[RewriteTarget]) -> list[RewriteTarget]:
        weighted = [t.weight is not None for t in targets]
        if any(weighted) and not all(weighted):
            raise ValueError("weight: set it on every target or on none")
        names = [t.model_rewrite for t in targets]
        if len(set(names)) != len(names):
            raise ValueError(f"modelRewrite: each target once, got {names}")
        return targets


class InferenceModelRewriteSpec(Model):
    """``spec``: the pool whose requests are rewritten, and the ordered rules."""

    pool_ref: PoolRef
    rules: list[RewriteRule] = Field(min_length=1)


class InferenceModelRewrite(Model):
    """``inference.networking.x-k8s.io/v1alpha2`` InferenceModelRewrite."""

    metadata: Metadata
    spec: InferenceModelRewriteSpec

    @model_validator(mode="after")
    def _session_key(self) -> InferenceModelRewrite:
        value = self.metadata.annotations.get(SESSION_KEY_ANNOTATION)
        if value is not None:
            source, _, name = value.partition(":")
            if source not in SESSION_SOURCES or not name.strip():
                raise ValueError(
                    f"metadata.annotations[{SESSION_KEY_ANNOTATION}]: expected header:<name>, "
                    f"cookie:<name> or body:<field>, got {value!r}"
                )
        return self
