"""What the rollout needs from the InferenceModelRewrite side, as Protocols.

The serving processes' rewrite state (``inference_ext.rewrite.RewriteState``, process state
``inference.rewrites``) is both: it takes weight overrides and tells observers about every
rewritten request when its response ends. Anything with these attributes will do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

REWRITES_STATE = "inference.rewrites"


class VersionSample(Protocol):
    """One rewritten request's outcome (``inference_ext.rewrite.VersionSample``)."""

    @property
    def request_id(self) -> str: ...
    @property
    def rewrite(self) -> str: ...
    @property
    def incoming_model(self) -> str: ...
    @property
    def target_model(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def ttft(self) -> float | None: ...
    @property
    def tpot(self) -> float | None: ...
    @property
    def duration(self) -> float: ...


class WeightSink(Protocol):
    """Takes a rewrite rule's weights: ``rewrite`` is ``ns/name``; None drops the override."""

    def set_weights(self, rewrite: str, model: str, weights: Mapping[str, int] | None) -> None:
        """Override the split of ``model``'s rule in ``rewrite``."""
        ...


class SampleSource(Protocol):
    """Calls each observer with every rewritten request's :class:`VersionSample`."""

    @property
    def observers(self) -> list[Callable[[VersionSample], None]]: ...


class Rewrites(WeightSink, SampleSource, Protocol):
    """Both sides, as the rewrite state offers them."""
