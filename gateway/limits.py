"""Rate limiting (Flask-Limiter): per API client, and stricter per address at the token endpoint.

    GATEWAY_RATE_LIMIT          every request, keyed by the authenticated client id (remote
                                address where there is no client)     default "600 per minute"
    GATEWAY_TOKEN_RATE_LIMIT    instead at /oauth/token and /oauth/revoke, keyed by the remote
                                address (there is no client yet):
                                they check client secrets (scrypt), so they are the costly and
                                the guessable ones                    default "60 per minute"
    GATEWAY_RATE_LIMIT_STORAGE  "memory://" (per worker, `WorkerMemoryStorage`) or
                                "redis://host:6379[/db]" (shared by every worker and host)
                                                                       default "memory://"
    GATEWAY_RATE_LIMIT_PREFIX   key prefix in the storage              default "iomgw"

A limit is any Flask-Limiter string, several separated by ";" ("10 per second; 600 per
minute"); "off" disables that limit. The limits are read from `app.config` on every request,
so they can be changed at run time.

Where this sits in the request path matters twice over. The check runs right after
`access.begin_request` (as part of the same hook), so the key is the client the token proves
(a forged or copied `client_id` claim cannot spend someone else's allowance), and the request
state exists, so a 429 is a problem like any other: `access.finish_request` audits it, the
token endpoint's 429 as a refused token request. It also runs when `begin_request` refuses
the request (bad token, unknown purpose): those count too, by address when there is no
client. `init_rate_limits` must be called after `app.before_request(access.begin_request)`.

If Redis becomes unreachable the limits are enforced per worker in memory until it is back,
rather than failing every request.
"""

from __future__ import annotations

import logging
import math
import os
import time

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limit, Limiter, RateLimitExceeded
from limits import parse_many
from limits.storage import MemoryStorage

from gateway import access
from gateway.problems import Problem, problem_response

log = logging.getLogger("gateway.limits")

DEFAULT_LIMIT = "600 per minute"
DEFAULT_TOKEN_LIMIT = "60 per minute"
DEFAULT_STORAGE = "memory://"
TOKEN_PATHS = ("/oauth/token", "/oauth/revoke")
EXEMPT_PATHS = ("/healthz", "/readyz")  # load balancers probe these
CONFIG_LIMIT = "GATEWAY_RATE_LIMIT"
CONFIG_TOKEN_LIMIT = "GATEWAY_TOKEN_RATE_LIMIT"
EXTENSION = "gateway.limiter"


def init_rate_limits(app: Flask) -> Limiter:
    """Attach the limiter; call it right after `app.before_request(access.begin_request)`."""
    if access.begin_request not in app.before_request_funcs.get(None, []):
        raise RuntimeError("init_rate_limits must come after access.begin_request is registered")
    app.config.setdefault(CONFIG_LIMIT, os.environ.get(CONFIG_LIMIT, DEFAULT_LIMIT))
    app.config.setdefault(
        CONFIG_TOKEN_LIMIT, os.environ.get(CONFIG_TOKEN_LIMIT, DEFAULT_TOKEN_LIMIT)
    )
    for name in (CONFIG_LIMIT, CONFIG_TOKEN_LIMIT):
        _parse(name, app.config[name])  # a typo fails at start-up, not on the first request
    storage = os.environ.get("GATEWAY_RATE_LIMIT_STORAGE", DEFAULT_STORAGE)
    if storage == DEFAULT_STORAGE:
        storage = f"{WorkerMemoryStorage.STORAGE_SCHEME[0]}://"
    options = {"socket_connect_timeout": 1, "socket_timeout": 1} if "redis" in storage else {}
    limiter = Limiter(
        _caller_key,
        # One limit, which is the token endpoint's where the request is for it: Flask-Limiter
        # resolves and evaluates every default limit on every request, exempt or not.
        default_limits=[
            Limit(
                lambda: _limit_string(CONFIG_TOKEN_LIMIT if _for_tokens() else CONFIG_LIMIT),
                scope=lambda _endpoint: "token-endpoint" if _for_tokens() else "caller",
                shared=True,
                exempt_when=lambda: request.path in EXEMPT_PATHS,
            )
        ],
        storage_uri=storage,
        storage_options=options,
        strategy="sliding-window-counter",
        key_prefix=os.environ.get("GATEWAY_RATE_LIMIT_PREFIX", "iomgw"),
        in_memory_fallback_enabled=True,
        # Unrouted paths (404/405) count too: probing for routes is traffic like any other.
        request_identifier=lambda: request.endpoint or "unrouted",
    )
    limiter.init_app(app)
    _check_with_authentication(app, limiter)
    app.register_error_handler(RateLimitExceeded, _too_many_requests)
    app.extensions[EXTENSION] = limiter
    return limiter


class WorkerMemoryStorage(MemoryStorage):
    """limits' MemoryStorage, without its expiry thread.

    MemoryStorage expires counters from a 10 ms `threading.Timer` that it starts again on the
    first hit after each run: under load, a new thread every few requests in every worker.
    Reading a counter already ignores it once expired, so here the expired ones are merely
    swept now and then, by the request that finds a sweep due (counters per window and per
    address would otherwise pile up)."""

    STORAGE_SCHEME = ["gateway-memory"]
    SWEEP_SECONDS = 60.0

    def __init__(self, uri: str | None = None, **options: object) -> None:
        super().__init__(uri, **options)  # type: ignore[arg-type]
        self.next_sweep = time.time() + self.SWEEP_SECONDS

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        self.get(key)  # forgets the counter if it has expired
        with self.locks[key]:
            self.storage[key] += amount
            if self.storage[key] == amount:
                self.expirations[key] = time.time() + expiry
        self._sweep_when_due()
        return self.storage.get(key, 0)

    def decr(self, key: str, amount: int = 1) -> int:
        self.get(key)
        with self.locks[key]:
            self.storage[key] = max(self.storage[key] - amount, 0)
        return self.storage.get(key, 0)

    def _sweep_when_due(self) -> None:
        now = time.time()
        if now < self.next_sweep:
            return
        self.next_sweep = now + self.SWEEP_SECONDS
        for key in [k for k, expires in self.expirations.items() if expires <= now]:
            self.get(key)


def _check_with_authentication(app: Flask, limiter: Limiter) -> None:
    """Run the limit check as part of `access.begin_request`, also when it refuses.

    Flask-Limiter checks in a before_request hook of its own, and Flask skips the remaining
    hooks once one raises: requests that `begin_request` refuses (a bad or revoked token, a
    missing or unknown purpose) would never be counted, so flooding with them would be free.
    Here they count, against the client when the token was good and the address when not."""
    hooks = app.before_request_funcs[None]
    hooks.remove(limiter._check_request_limit)  # Flask-Limiter 4 has no public check()
    position = hooks.index(access.begin_request)

    def begin_request_and_limit() -> None:
        try:
            access.begin_request()
        except Problem:
            limiter._check_request_limit()  # a 429 here replaces the refusal
            raise
        limiter._check_request_limit()

    hooks[position] = begin_request_and_limit


def _parse(name: str, value: str) -> None:
    if value.strip().lower() in ("", "off"):
        log.warning("rate limit %s is off", name)
        return
    try:
        parse_many(value)
    except ValueError as error:
        raise ValueError(f"{name}={value!r} is not a rate limit: {error}") from None


def _limit_string(name: str) -> str:
    value = str(current_app.config.get(name) or "")
    return "" if value.strip().lower() == "off" else value


def _for_tokens() -> bool:
    return request.path in TOKEN_PATHS


def _caller_key() -> str:
    # At the token endpoint there is no caller yet: the remote address.
    caller = g.get("caller")
    return f"client:{caller.client_id}" if caller is not None else _address_key()


def _address_key() -> str:
    # The socket peer, or behind GATEWAY_TRUSTED_PROXIES proxies the address they forwarded
    # (werkzeug's ProxyFix); without that setting every client would share the proxy's.
    return f"addr:{request.remote_addr or 'unknown'}"


def _too_many_requests(error: RateLimitExceeded) -> Response:
    limiter: Limiter = current_app.extensions[EXTENSION]
    current = limiter.current_limit
    reset_at = current.reset_at if current is not None else time.time() + 60
    retry_after = max(1, math.ceil(reset_at - time.time()))
    response = problem_response(
        Problem(
            429,
            detail=f"Rate limit exceeded ({error.limit.limit}); retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )
    )
    if request.path in TOKEN_PATHS and hasattr(g, "note"):
        # Audited like the endpoint's own refusals (the view, which notes them, did not run).
        access.note_token_request(response, revocation=request.path == "/oauth/revoke")
        g.note.reason = "too-many-requests"
    return response
