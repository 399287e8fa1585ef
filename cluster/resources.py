"""Served resource types, found through the API server's discovery documents."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from cluster.errors import ClusterError

# Kubernetes orders versions GA > beta > alpha, then by number (v1 > v1beta2 > v1alpha1).
_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource type as served: group, version, kind, plural, scope."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``group/version`` (just the version for the core group)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        return f"{self.plural}.{self.group or 'core'}/{self.version}"


def version_rank(version: str) -> tuple[int, int, int]:
    """Sort key: a higher rank is the more stable, newer version."""
    match = _VERSION.match(version)
    if match is None:
        return (-1, 0, 0)
    major, stage, minor = match.groups()
    return ({"alpha": 0, "beta": 1, None: 2}[stage], int(major), int(minor or 0))


def _get(api: client.ApiClient, path: str) -> dict[str, Any]:
    # param_serialize adds the bearer token (call_api sends exactly the headers it is given).
    method, url, headers, _, _ = api.param_serialize(
        "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    response = api.call_api(method, url, headers)
    raw = response.read()
    if response.status == 404:
        return {}
    if not 200 <= response.status < 300:
        raise ClusterError(f"discovery GET {path}: HTTP {response.status}")
    data: dict[str, Any] = json.loads(raw or b"{}")
    return data


def discover(
    api: client.ApiClient, wanted: Mapping[tuple[str, str], Iterable[str]]
) -> dict[tuple[str, str], Resource]:
    """The served Resource of each wanted (group, kind), in the highest of the versions we read
    that the server serves (no versions given: any it serves); kinds it does not serve are left
    out."""
    groups = {g["name"]: [v["version"] for v in g["versions"]] for g in _apis(api)}
    groups[""] = ["v1"]
    lists: dict[tuple[str, str], list[dict[str, Any]]] = {}
    out: dict[tuple[str, str], Resource] = {}
    for (group, kind), versions in sorted(wanted.items()):
        accepted = set(versions)
        served = [v for v in groups.get(group, []) if not accepted or v in accepted]
        for version in sorted(served, key=version_rank, reverse=True):
            if (group, version) not in lists:
                path = f"/apis/{group}/{version}" if group else "/api/v1"
                lists[(group, version)] = _get(api, path).get("resources", [])
            found = [
                r for r in lists[(group, version)] if r["kind"] == kind and "/" not in r["name"]
            ]
            if found:
                out[(group, kind)] = Resource(
                    group, version, kind, found[0]["name"], bool(found[0]["namespaced"])
                )
                break
    return out


def _apis(api: client.ApiClient) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = _get(api, "/apis").get("groups", [])
    return groups
