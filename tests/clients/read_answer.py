"""Asks Assistant one question and reads the answer from its event stream with httpx and
httpx-sse, as a script or a native app would: a personal token as the Bearer header, the
position the send returned, a reconnect with Last-Event-ID after a drop (after a 429, once
its Retry-After has passed), and a read timeout of two keep-alive intervals as the
watchdog. Prints what it sees as JSON lines; the last one is the answer.

    ASSISTANT_URL=https://assistant.example.com ASSISTANT_TOKEN=ast_... python read_answer.py "Hello"
"""

import json
import os
import sys
import time

import httpx
from httpx_sse import connect_sse


def show(**line) -> None:
    print(json.dumps(line, ensure_ascii=False), flush=True)


def api(client: httpx.Client, method: str, path: str, **kwargs) -> dict:
    response = client.request(method, path, **kwargs)
    if response.is_error:
        sys.exit(f"{method} {path}: {response.status_code} {response.text}")
    return response.json()


def read_answer(question: str) -> int:
    token = os.environ["ASSISTANT_TOKEN"]
    with httpx.Client(
        base_url=os.environ["ASSISTANT_URL"], headers={"Authorization": f"Bearer {token}"}
    ) as client:
        me = api(client, "GET", "/api/me/")
        created = api(client, "POST", "/api/conversations/", json={"content": question})
        answer = created["assistant_message"]
        show(type="sent", conversation=created["id"], answer=answer["id"], position=answer["last_event_id"])
        # Silence for two keep-alive intervals means the connection is dead.
        timeout = httpx.Timeout(10, read=me["events"]["keepalive_seconds"] * 2 + 2)
        position, text, retry = answer["last_event_id"], "", 2.0
        while True:
            show(type="connect", header=position, query=None)
            try:
                with connect_sse(
                    client, "GET", created["events_url"], headers={"Last-Event-ID": position}, timeout=timeout
                ) as source:
                    if source.response.status_code == 429:  # over a limit: once it has passed
                        wait = float(source.response.headers.get("Retry-After", retry))
                        show(type="limited", wait=wait)
                        time.sleep(wait)
                        continue
                    if source.response.status_code != 200:  # refused (401, 404): for good
                        show(type="refused", status=source.response.status_code)
                        return 1
                    for event in source.iter_sse():
                        if event.retry is not None:
                            retry = event.retry / 1000
                        if event.id:
                            position = event.id
                        data = event.json() if event.data else None
                        show(type="event", event=event.event, id=event.id or None, data=data)
                        ours = data is not None and data.get("message") == answer["id"]
                        if event.event == "start" and ours:
                            text = ""  # (re)starts here: rebuild from the deltas that follow
                        elif event.event == "delta" and ours:
                            text += data["text"]
                        elif event.event in ("done", "error") and ours:
                            show(type="answer", end=event.event, text=text, data=data)
                            return 0
                        elif event.event == "stream-reset":
                            # The position cannot be resumed: take the stored answer, and
                            # follow it on if it still streams.
                            conversation = api(client, "GET", created["detail_url"])
                            stored = next(m for m in conversation["messages"] if m["id"] == answer["id"])
                            text = stored["content"]
                            if stored["status"] != "streaming":
                                show(type="answer", end=stored["status"], text=text, data=stored)
                                return 0
                            position = conversation["last_event_id"]
                            break
                        elif event.event in ("unauthorized", "stream-closed"):
                            return 2  # never reconnect by itself
            except httpx.TransportError as error:  # dropped, reset, or silent (ReadTimeout)
                show(type="connection-error", error=type(error).__name__)
            time.sleep(retry)  # then resume from `position`, as the server's `retry:` asks


if __name__ == "__main__":
    sys.exit(read_answer(sys.argv[1]))
