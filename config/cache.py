"""Django's Redis cache on one connection pool per process.

Django keeps a cache object per context (`django.core.cache.caches` is an asgiref
`Local`), and each `RedisCache` object builds its own redis-py pool. Under ASGI every
request runs in a context of its own, so each request built a pool, connected to Redis
anew and dropped both: a TCP connection per request that counts a limit. This pool
class, given through Django's documented `pool_class` option, hands every cache object
of the process the same pool for the same address and options.
"""

from __future__ import annotations

import threading
from typing import Any

import redis


class ProcessConnectionPool(redis.ConnectionPool):
    """`from_url` returns this process's pool for the address and options, made once."""

    _pools: dict[str, redis.ConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:
        key = repr((url, sorted(kwargs.items())))
        with cls._lock:
            pool = cls._pools.get(key)
            if pool is None:
                pool = cls._pools[key] = super().from_url(url, **kwargs)
            return pool
