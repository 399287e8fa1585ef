"""LLMBackend: OpenAI and Anthropic providers served in the gateway, with translation between them.

``api`` validates the kind at load; ``catalog`` compiles it into frozen lookup tables; ``app`` is
the Starlette responder; ``upstream`` calls the providers; ``translate`` holds the sans-IO
request, response and stream translators; ``formats`` the client-facing error bodies.
"""
