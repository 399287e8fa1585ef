"""Progressive rollouts of a model: a canary's share of traffic stepped up while metrics hold.

``InferenceRollout`` (Flagger's closed loop over an InferenceModelRewrite's weights, measured by
the gateway itself: :mod:`.controller`), answer agreement of mirrored canary copies
(:mod:`.agreement`) and the ``/ui/rollouts`` page (:mod:`.ui`).
"""
