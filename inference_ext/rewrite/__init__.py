"""InferenceModelRewrite: a pool's weighted model rewrites, sticky per session, overridable.

- :mod:`.rules`: the rules that apply to a pool, compiled; a request's target model;
- :mod:`.sticky`: a session's bucket and the targets' bucket ranges (monotone weight changes);
- :mod:`.splice`: the body's ``model`` value replaced in place;
- :mod:`.state`: :class:`RewriteState` (weight overrides, version-sample observers), process state.
"""

from inference_ext.rewrite.rules import Decision, PoolRewrites, RewriteError, pool_rewrites
from inference_ext.rewrite.splice import replace_model
from inference_ext.rewrite.state import RewriteState, VersionSample, route_version

__all__ = [
    "Decision",
    "PoolRewrites",
    "RewriteError",
    "RewriteState",
    "VersionSample",
    "pool_rewrites",
    "replace_model",
    "route_version",
]
