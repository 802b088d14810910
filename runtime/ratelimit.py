"""A token bucket: how much a container can make its supervisor do per second."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up. Time is passed in (monotonic seconds),
    so the arithmetic is testable without sleeping."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait_time(self, now: float) -> float:
        """Seconds until a token is available (0: one is)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


class DropLog:
    """Counts what a limiter turned away and says so at most once per window."""

    __slots__ = ("dropped", "total", "window", "window_start")

    def __init__(self, window: float, now: float) -> None:
        self.window = window
        self.window_start = now
        self.dropped = 0  # in the current window
        self.total = 0

    def drop(self, now: float, count: int = 1) -> int | None:
        """Count `count`; returns the window's count when a line is due, else None."""
        self.dropped += count
        self.total += count
        if self.total == count or now - self.window_start >= self.window:
            n, self.dropped, self.window_start = self.dropped, 0, now
            return n
        return None
