"""L4 AuthorizationPolicy: translated from ``security.istio.io/v1``, evaluated as ztunnel does."""

from mesh.rbac.authz import Action, Authorizer, ConnectionAttrs, Decision, Policy, compile_policy

__all__ = ["Action", "Authorizer", "ConnectionAttrs", "Decision", "Policy", "compile_policy"]
