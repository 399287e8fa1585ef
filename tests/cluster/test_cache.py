"""ObjectCache.get: the latest copy from whichever scope of the kind holds it."""

from __future__ import annotations

from cluster.cache import ObjectCache
from cluster.informer import Scope
from cluster.resources import Resource

SECRETS = Resource("", "v1", "Secret", "secrets", True)
SERVICES = Resource("", "v1", "Service", "services", True)


def _obj(kind: str, name: str) -> dict[str, object]:
    return {"kind": kind, "metadata": {"namespace": "default", "name": name}}


def test_get_looks_in_every_scope_of_the_kind_and_only_those() -> None:
    cache = ObjectCache()
    one = Scope(SECRETS, "default", "metadata.name=one")
    two = Scope(SECRETS, "default", "metadata.name=two")
    cache.replace(one, [_obj("Secret", "one")])
    cache.event(two, "ADDED", _obj("Secret", "two"))
    cache.replace(Scope(SERVICES), [_obj("Service", "three")])
    assert cache.get("", "Secret", "default", "one") == _obj("Secret", "one")
    assert cache.get("", "Secret", "default", "two") == _obj("Secret", "two")
    assert cache.get("", "Secret", "default", "three") is None
    assert cache.get("", "Service", "default", "three") == _obj("Service", "three")


def test_a_forgotten_scope_is_not_looked_in() -> None:
    cache = ObjectCache()
    scope = Scope(SECRETS, "default", "metadata.name=one")
    cache.replace(scope, [_obj("Secret", "one")])
    cache.forget(scope)
    assert cache.get("", "Secret", "default", "one") is None
    cache.event(scope, "ADDED", _obj("Secret", "one"))  # watched again
    assert cache.get("", "Secret", "default", "one") == _obj("Secret", "one")
