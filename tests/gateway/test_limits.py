"""The per-worker rate-limit storage: it counts like limits' MemoryStorage, without a thread.

(What the limits do to requests, 429s and their audit events, is tested in
tests/security/test_api4_resource_consumption.py.)"""

from __future__ import annotations

import threading
import time

from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from gateway.limits import WorkerMemoryStorage


def test_memory_uri_of_the_gateway_is_the_threadless_storage(app) -> None:  # type: ignore[no-untyped-def]
    limiter = app.extensions["gateway.limiter"]
    assert type(limiter.storage) is WorkerMemoryStorage


def test_limits_like_memory_storage_and_starts_no_thread(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    storage = storage_from_string("gateway-memory://")
    limiter = SlidingWindowCounterRateLimiter(storage)
    limit = RateLimitItemPerMinute(5)
    started = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda t: started.append(t) or start(t))
    outcomes = [limiter.hit(limit, "client:a") for _ in range(3)]
    time.sleep(0.03)  # MemoryStorage would start its 10 ms expiry timer again on the next hit
    outcomes += [limiter.hit(limit, "client:a") for _ in range(4)]
    assert outcomes == [True] * 5 + [False] * 2
    assert limiter.hit(limit, "client:b")  # another key has its own allowance
    assert started == []


def test_expired_counters_are_swept() -> None:
    storage = WorkerMemoryStorage()
    for address in range(100):
        storage.incr(f"addr:{address}", expiry=0.01)
    storage.incr("client:keeps", expiry=60)
    time.sleep(0.02)
    storage.next_sweep = 0.0  # a sweep is due
    storage.incr("client:keeps", expiry=60)
    assert set(storage.expirations) == {"client:keeps"}
    assert storage.get("client:keeps") == 2
