"""Sticky version assignment: a session's key hashes to a bucket; targets own bucket ranges.

A session (the value of the rewrite's session key) hashes — BLAKE2b of the rewrite's name and
the key, so the assignment is the same in every worker and gateway — to a bucket in
``[0, BUCKETS)``. The targets own contiguous ranges in the rule's list order: the first target
``[0, e1)``, the second ``[e1, e2)`` ... where ``e_i`` is the cumulative weight share of the
first ``i`` targets (scaled to ``BUCKETS``). A session changes version only when a range edge
passes over its bucket.

Guarantee: moving weight between two targets adjacent in list order (with two targets, any
weight change) moves exactly the sessions between the old and the new edge, and all of them
towards the target that grew — raising a canary from 10 % to 50 % moves 40 % of the sessions
from stable to canary and none back. Limit: with more than two targets, a change spread over
several of them shifts every edge between them, so a session may move between two targets whose
weights did not change (keep the stable version first, canaries after it, and move weight one
adjacent pair at a time). Weight 0 owns no bucket; all-zero weights own none (no assignment).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from hashlib import blake2b
from itertools import accumulate

BUCKETS = 10_000


def bucket(rewrite: str, key: str) -> int:
    """The session's bucket in ``[0, BUCKETS)`` under InferenceModelRewrite ``rewrite``."""
    digest = blake2b(f"{rewrite}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def assign(slot: int, weights: Sequence[int]) -> int | None:
    """The index of the target whose range holds bucket ``slot``; None when every weight is 0."""
    total = sum(weights)
    if total <= 0:
        return None
    edges = [running * BUCKETS // total for running in accumulate(weights)]
    return bisect_right(edges, slot)  # the last edge is BUCKETS: always a target
