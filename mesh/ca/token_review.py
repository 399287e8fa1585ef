"""Authenticating a caller of the CA by its projected ServiceAccount token, through a TokenReview.

Two kinds of caller present one (Istio's CA tells them apart the same way):

- a ztunnel: the token belongs to one of the ztunnel ServiceAccounts and is bound to a pod on a
  node; the node named in the token's claims (``authentication.kubernetes.io/node-name`` in the
  review's ``user.extra``) is the node the caller is, and it obtains certificates for that node's
  Pods (Istio's node authorizer). A ztunnel account's token without a node is refused.
- any other workload (a waypoint, say): the token stands for its own ServiceAccount only, and
  obtains a certificate for exactly that identity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kubernetes import client

log = logging.getLogger(__name__)

NODE_NAME_CLAIM = "authentication.kubernetes.io/node-name"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True, slots=True)
class ReviewedToken:
    """Whose a valid token is: its ServiceAccount, and the node for a ztunnel's token."""

    namespace: str
    service_account: str
    node: str | None  # set only for a ztunnel ServiceAccount's token


class TokenReviewer:
    """Turns a bearer token into the ServiceAccount (and node) it was issued to, or None."""

    def __init__(
        self, api: client.ApiClient, service_accounts: frozenset[str], audience: str | None = None
    ) -> None:
        self._api = client.AuthenticationV1Api(api)
        self.service_accounts = service_accounts  # the ztunnels': "namespace/name"
        self.audience = audience
        self.reviews = 0

    def review(self, token: str) -> ReviewedToken | None:
        """Whose a ServiceAccount token is (blocking: one API call); None when it is not valid,
        not a ServiceAccount's, or a ztunnel account's naming no node."""
        self.reviews += 1
        spec = client.V1TokenReviewSpec(
            token=token, audiences=[self.audience] if self.audience else None
        )
        review = self._api.create_token_review(client.V1TokenReview(spec=spec))
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            log.warning("token review: not authenticated (%s)", status.error if status else "-")
            return None
        username = status.user.username or ""
        namespace, _, name = username[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
        if not username.startswith(SERVICE_ACCOUNT_PREFIX) or not namespace or not name:
            log.warning("token review: %s is not a service account", username)
            return None
        if f"{namespace}/{name}" not in self.service_accounts:
            return ReviewedToken(namespace, name, None)
        nodes = (status.user.extra or {}).get(NODE_NAME_CLAIM) or []
        if len(nodes) != 1:
            log.warning("token review: the ztunnel token of %s names no node", username)
            return None
        return ReviewedToken(namespace, name, str(nodes[0]))
