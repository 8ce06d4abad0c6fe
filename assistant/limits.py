"""The limits a request meets before it changes anything: answers per minute and tokens
per day (from the usage record), and cheap writes per minute (throttle.py's counters).

Both refuse with 429 and the seconds until a retry can succeed.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from assistant import throttle
from assistant.errors import ServiceError
from assistant.selectors import local_midnight, usage_get
from assistant.usage import usage_oldest_since


def writes_allow(user, limit: throttle.Limit) -> None:
    """Count one cheap write of `user` against `limit`; 429 `rate_limited` beyond it.

    Counted before the lookup: probing ids that are not the user's spends the budget too.
    """
    wait = limit.hit(str(getattr(user, "pk", user)))
    if wait is not None:
        raise ServiceError(
            429,
            "rate_limited",
            _("Too many changes in a short time. Try again in %(seconds)d seconds.") % {"seconds": wait},
            retry_after=wait,
        )


def answers_allow(user_id: int) -> None:
    """Refuse before anything reaches the upstream: per-minute rate, then daily tokens."""
    now = timezone.now()
    usage = usage_get(user=user_id, now=now)
    if usage.rate_limit and usage.answers_last_minute >= usage.rate_limit:
        minute_ago = now - timedelta(minutes=1)
        oldest = usage_oldest_since(user_id=user_id, since=minute_ago)
        # None: the minute passed since it was counted; asking again may succeed at once.
        wait = int(((oldest or minute_ago) + timedelta(minutes=1) - now).total_seconds()) + 1
        raise ServiceError(
            429,
            "rate_limited",
            _("You sent %(count)d messages in the last minute. Try again in %(seconds)d seconds.")
            % {"count": usage.answers_last_minute, "seconds": wait},
            retry_after=wait,
        )
    if usage.quota_left == 0:
        tomorrow = local_midnight(now) + timedelta(days=1)
        raise ServiceError(
            429,
            "quota_exceeded",
            _("You used today's %(quota)s tokens. The quota resets at %(time)s.")
            % {"quota": usage.daily_quota, "time": date_format(tomorrow, "DATETIME_FORMAT")},
            retry_after=int((tomorrow - now).total_seconds()) + 1,
        )
