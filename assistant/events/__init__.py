"""The event stream of a conversation, along its data flow.

wire.py          channel names, positions, JSON data and SSE frames
log.py           what both replay logs share: limits, results, errors
memory_log.py    the replay log in this process's memory (the default)
redis_stream.py  the Redis log's streams: the commands of an append or a read
redis_log.py     the replay log in Redis, shared by every process (REDIS_URL)
redis_fanout.py  the Redis log's wake-ups, stop requests and revocations
publish.py       this process's log, and publishing events into it
subscriber.py    the SSE body of one open stream, read from the log
eventstream.py   django-eventstream's storage and channel manager: send_event()
"""
