"""The endpoint picker protocol's header and metadata keys (GIE's ``pkg/epp/metadata``)."""

from __future__ import annotations

# EPP -> proxy: "ip:port[,ip:port...]", the pick then its fallbacks; a request header and, the
# same value, dynamic metadata ``envoy.lb`` / this key.
DESTINATION_ENDPOINT = "x-gateway-destination-endpoint"
DESTINATION_NAMESPACE = "envoy.lb"
# Proxy -> EPP on the response path: the endpoint that served (after retries), in
# ``metadata_context`` namespace ``envoy.lb``.
SERVED_ENDPOINT = "x-gateway-destination-endpoint-served"
# Proxy -> EPP: the endpoints the pick must come from, in filter metadata (string or list).
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
REQUEST_ID = "x-request-id"
