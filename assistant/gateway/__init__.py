"""The OpenAI-compatible gateway: /v1/models and /v1/chat/completions with a personal API token."""
