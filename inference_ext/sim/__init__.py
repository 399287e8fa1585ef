"""``ambient sim``: vLLM-compatible model-server simulators (OpenAI API, vLLM metrics)."""
