"""The answer task, along its data flow: provider -> coalesce -> publish -> persist.

Each answer is an asyncio task owned by the server process, not by any HTTP
connection, so closing the tab does not stop it. Deltas are published in short
windows (one event per window, not per token) and the partial text reaches the
database at a bounded rate together with its stream position. Every answer ends in
exactly one of `done`, `error` or `cancelled`, stored before it is announced.

task.py      starting, stopping and running one answer: the provider's stream into it
answer.py    one answer while it streams: coalescing window, publishing, its end
partials.py  the partial writer: every streaming answer's text in one write per interval
ending.py    an answer's end as its row stores it and its final event says it
running.py   the answers generating in this process, and tasks that outlive a request
leases.py    heartbeat, restart recovery, stop from any process, shutdown
"""
