"""A thread-safe token-bucket rate limiter (per API key, per client address)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Allow ``per_minute`` events per key on average, in bursts of at most ``burst``.

    Parameters
    ----------
    per_minute : float
        Sustained rate; 0 disables the limiter.
    burst : int
        Bucket size: how many events may come at once after a quiet spell.
    clock : callable, optional
        Monotonic seconds (for tests).
    max_keys : int
        Buckets kept at most; the oldest are dropped past it (bounded memory under a
        flood of distinct keys).

    Examples
    --------
    >>> t = [0.0]
    >>> rl = RateLimiter(60, burst=2, clock=lambda: t[0])
    >>> rl.hit("k"), rl.hit("k"), rl.hit("k")
    (None, None, 1)
    >>> t[0] = 1.0
    >>> rl.hit("k")
    """

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.rate = float(per_minute) / 60.0
        self.burst = max(int(burst), 1)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def blocked(self, key: str) -> int | None:
        """Return the seconds to wait if ``key`` has no event left now, else None (no count).

        Examples
        --------
        >>> t = [0.0]
        >>> rl = RateLimiter(60, burst=1, clock=lambda: t[0])
        >>> rl.blocked("k"), rl.hit("k"), rl.blocked("k")
        (None, None, 1)
        """
        if self.rate <= 0:
            return None
        with self._lock:
            tokens, _ = self._refill(key, pop=False)
        return self._wait(tokens)

    def hit(self, key: str) -> int | None:
        """Count one event for ``key``; return None if allowed, else seconds to wait."""
        if self.rate <= 0:
            return None
        with self._lock:
            tokens, now = self._refill(key, pop=True)
            wait = self._wait(tokens)
            self._buckets[key] = (tokens - 1.0 if wait is None else tokens, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.pop(next(iter(self._buckets)))
        return wait

    def _refill(self, key: str, *, pop: bool) -> tuple[float, float]:
        """Return the tokens of ``key``'s bucket now, and now (call with the lock held)."""
        now = self._clock()
        get = self._buckets.pop if pop else self._buckets.get
        tokens, then = get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - then) * self.rate), now

    def _wait(self, tokens: float) -> int | None:
        """Return None when a token is left, else the whole seconds until one is."""
        return None if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) / self.rate))
