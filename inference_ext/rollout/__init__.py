"""Progressive rollouts of a model: a canary's share of traffic stepped up while metrics hold."""
