"""What tests share, grouped by topic; conftest.py files hold fixtures only.

live: a daphne over the test database and clients logged in to it. upstream: the fake
OpenAI-compatible server. sse: reading event streams. chat: the chat API as a client uses
it. resume: following, cutting and resuming an answer. streams: the stream endpoint on the
wire. http: ASGI scopes and security headers. production: the documented production
environment. markup: Markdown corpora and inert-HTML checks. browser: chromium pages.
commands: management commands. routes and servers: the attack suite's targets and helpers.
counting_asgi: the app counting its SQL (for bench/ and the tests). documents: sample
files of every supported format and hostile ones (bombs, encrypted, truncated).
"""
