"""Personal API tokens: how native apps, scripts and the OpenAI-compatible gateway get in.

A token is a secret shown once; the database keeps its SHA-256 digest and a visible
prefix. `Authorization: Bearer <token>` authenticates a request to the JSON API, the
event stream and the gateway (/v1/), without a cookie and so without CSRF.
"""
