"""Authenticating a ztunnel by its projected ServiceAccount token, through a TokenReview.

The token must belong to one of the allowed ServiceAccounts (the ztunnel's) and be bound to a
pod on a node: the node named in the token's claims (``authentication.kubernetes.io/node-name``
in the review's ``user.extra``) is the node the caller is, as Istio's node authorizer has it.
"""

from __future__ import annotations

import logging

from kubernetes import client

log = logging.getLogger(__name__)

NODE_NAME_CLAIM = "authentication.kubernetes.io/node-name"


class TokenReviewer:
    """Turns a bearer token into the node it was issued on, or None."""

    def __init__(
        self, api: client.ApiClient, service_accounts: frozenset[str], audience: str | None = None
    ) -> None:
        self._api = client.AuthenticationV1Api(api)
        self.service_accounts = service_accounts  # "namespace/name"
        self.audience = audience
        self.reviews = 0

    def node_for(self, token: str) -> str | None:
        """The node of a valid ztunnel token (blocking: one API call)."""
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
        prefix = "system:serviceaccount:"
        account = username[len(prefix) :].replace(":", "/", 1)
        if not username.startswith(prefix) or account not in self.service_accounts:
            log.warning("token review: %s is not an allowed ztunnel service account", username)
            return None
        nodes = (status.user.extra or {}).get(NODE_NAME_CLAIM) or []
        if len(nodes) != 1:
            log.warning("token review: the token of %s names no node", username)
            return None
        return str(nodes[0])
