"""The MCPBackend kind (``agents.ambient.dev/v1alpha1``), validated at load."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agentgw.client_keys import ApiKey, unique_names
from agentgw.mcp.authz import RuleError, compile_rules
from agentgw.unique import check_unique
from gateway.config.models import Metadata, Model

GROUP = "agents.ambient.dev"
KIND = "MCPBackend"
VERSIONS = ["v1alpha1"]

PrefixMode = Literal["Always", "Never", "Conditional"]
FailureMode = Literal["FailClosed", "FailOpen"]
# No '_' (the prefix separator) and no '+' or '/' (resource URI and id separators) in target
# names, so a prefixed name, URI or id splits back at its first separator.
TARGET_NAME = r"^[A-Za-z][A-Za-z0-9.-]{0,62}$"


class ObjectKeyRef(Model):
    """A key of a Secret or ConfigMap in the MCPBackend's namespace."""

    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class ConfigMapKeyRef(Model):
    """``{configMapRef: {name, key}}``: where a document is kept."""

    config_map_ref: ObjectKeyRef


class StreamableHttpTarget(Model):
    """An MCP server reached over HTTP at ``url``."""

    url: str = Field(pattern=r"^https?://[^\s]+$")


class StdioTarget(Model):
    """An MCP server started as a child process speaking MCP on stdin/stdout."""

    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)


class OpenApiTarget(Model):
    """An HTTP service described by an OpenAPI 3 document (JSON or YAML in a ConfigMap), each
    operation a tool, called at ``baseURL``."""

    schema_: ConfigMapKeyRef = Field(alias="schema")
    base_url: str = Field(alias="baseURL", pattern=r"^https?://[^\s]+$")


class A2aTarget(Model):
    """An A2A agent offered as tools: ``send_message`` and one per skill of its card."""

    url: str = Field(pattern=r"^https?://[^\s]+$")


class ServiceRef(Model):
    """``backendRef``: a Streamable HTTP MCP server at ``path`` on a Service port in the
    MCPBackend's namespace (TLS when a BackendTLSPolicy targets the port)."""

    group: Literal[""] = ""
    kind: Literal["Service"] = "Service"
    name: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    path: str = Field(default="/mcp", pattern=r"^/[^\s]*$")


class Target(Model):
    """``spec.targets[]``: one upstream MCP server and the name its tools are prefixed with;
    exactly one of ``streamableHTTP``, ``sse`` (the legacy HTTP+SSE transport), ``stdio``,
    ``openAPI``, ``a2a`` and ``backendRef`` (a Service)."""

    name: str = Field(pattern=TARGET_NAME)
    streamable_http: StreamableHttpTarget | None = Field(default=None, alias="streamableHTTP")
    sse: StreamableHttpTarget | None = None
    stdio: StdioTarget | None = None
    open_api: OpenApiTarget | None = Field(default=None, alias="openAPI")
    a2a: A2aTarget | None = None
    backend_ref: ServiceRef | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Target:
        kinds = (
            self.streamable_http,
            self.sse,
            self.stdio,
            self.open_api,
            self.a2a,
            self.backend_ref,
        )
        if sum(kind is not None for kind in kinds) != 1:
            raise ValueError(
                "exactly one of streamableHTTP, sse, stdio, openAPI, a2a and backendRef is required"
            )
        return self


class JwtAuthentication(Model):
    """``authentication.jwt``: bearer tokens signed by a key of ``jwks``, for ``audiences``."""

    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    jwks: ConfigMapKeyRef
    clock_skew_seconds: float = Field(default=30.0, ge=0)


class Authentication(Model):
    """``spec.authentication``: who may call (none: anyone): bearer JWTs, API keys from
    Secrets (the LLMBackend's key shape), or either."""

    jwt: JwtAuthentication | None = None
    api_keys: list[ApiKey] = Field(default_factory=list, max_length=1024)

    @model_validator(mode="after")
    def _some_way_in(self) -> Authentication:
        if self.jwt is None and not self.api_keys:
            raise ValueError("at least one of jwt and apiKeys is required")
        unique_names("apiKeys", self.api_keys)
        return self


class Authorization(Model):
    """``spec.authorization``: CEL rules; a tool, prompt or resource is allowed when any rule
    is true (no rules: all are)."""

    rules: list[str] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _compile(self) -> Authorization:
        try:
            compile_rules(self.rules)
        except RuleError as exc:
            raise ValueError(str(exc)) from exc
        return self


class Budgets(Model):
    """``spec.budgets``: tool calls each caller (token subject, API key, mesh identity, agent
    id or address) may make: per minute across the workers, at once per worker."""

    tool_calls_per_minute: int | None = Field(default=None, gt=0)
    concurrent_tool_calls: int | None = Field(default=None, gt=0)


class MCPBackendSpec(Model):
    """``spec``: targets, how names are prefixed, what a failing target does, the session key."""

    targets: list[Target] = Field(min_length=1, max_length=64)
    prefix_mode: PrefixMode = "Conditional"
    failure_mode: FailureMode = "FailClosed"
    # The AES-GCM key of session ids (any length; HKDF makes the key). Without it each process
    # makes its own, and a session does not outlive the process that began it.
    session_key_secret_ref: ObjectKeyRef | None = None
    idle_timeout_seconds: float = Field(default=300.0, gt=0)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    max_message_bytes: int = Field(default=4 << 20, gt=0)
    authentication: Authentication | None = None
    authorization: Authorization | None = None
    budgets: Budgets = Field(default_factory=Budgets)

    @model_validator(mode="after")
    def _unique_targets(self) -> MCPBackendSpec:
        check_unique("targets", (target.name for target in self.targets))
        return self


class MCPBackend(Model):
    """``agents.ambient.dev/v1alpha1`` MCPBackend."""

    metadata: Metadata
    spec: MCPBackendSpec
