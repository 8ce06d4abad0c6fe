"""A long conversation for the page benchmark (bench/page.py): ``python -m bench.seed
<username> <exchanges>`` in the server's environment prints its id.

Answers are Markdown of the kind models write (headings, lists, a table, code; about
2,000 characters each), so the page renders what it renders in daily use.
"""

from __future__ import annotations

import sys

import django

ANSWER = """## Step {n}

Here is what to do, in order:

1. **Collect** the figures for quarter {n}.
2. Compare them with the plan; see the table below.
3. Write down *what changed* and why.

| Item | Plan | Actual |
|------|-----:|-------:|
| Costs | {n}00 € | {n}20 € |
| Hours | 40 | 42 |

```python
def deviation(plan: float, actual: float) -> float:
    return (actual - plan) / plan
```

The deviation for step {n} is small; keep an eye on it next month.
"""


def main(argv: list[str]) -> int:
    username, exchanges = argv[0], int(argv[1])
    django.setup()

    from django.contrib.auth import get_user_model

    from assistant.models import Conversation, Message
    from assistant.rendering import rendered_fields

    def answer_fields(text: str) -> dict[str, str]:
        # As an answer is stored at its end: its text and its rendered HTML.
        return {"content": text, **rendered_fields(text)}

    user = get_user_model().objects.get(username=username)
    conversation = Conversation.objects.create(owner=user, title="Long conversation", model="fake-model")
    Message.objects.bulk_create(
        message
        for n in range(exchanges)
        for message in (
            Message(conversation=conversation, role="user", content=f"What is step {n}? Please explain."),
            Message(
                conversation=conversation,
                role="assistant",
                **answer_fields("\n".join(ANSWER.format(n=f"{n}.{part}") for part in range(4))),
                status=Message.Status.DONE,
                model="fake-model",
            ),
        )
    )
    print(conversation.pk)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
