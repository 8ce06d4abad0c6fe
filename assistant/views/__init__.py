"""The views, all sync but /readyz (Django's middleware chain is sync).

    pages.py          the chat, a conversation, login, first-run setup, the access log
    api.py            the JSON API, its conventions (api_view) and its error shape
    health_checks.py  /healthz and /readyz

The event stream is not a view: assistant/stream_endpoint.py.
"""
