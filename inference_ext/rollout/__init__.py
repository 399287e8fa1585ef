"""Closed-loop canary rollouts of model versions (``InferenceRollout``), Flagger's loop over an
InferenceModelRewrite's weights, measured by the gateway itself."""
