"""The Gateway API Inference Extension for ambient-gateway: InferencePool backends, an endpoint
picker for model servers, body-based routing, and ``ambient sim``, a vLLM-compatible model-server
simulator. A plugin of the gateway (entry point ``ambient.plugins: inference``)."""
