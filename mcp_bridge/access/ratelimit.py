"""Failed attempts per client in a sliding minute: what makes guessing codes pointless."""

from __future__ import annotations

import time
from collections import deque

WINDOW = 60.0
MAX_FAILURES = 10
MAX_CLIENTS = 10_000


class FailureLimiter:
    """A client with more than `max_failures` failures in the last `window` seconds is refused (429).

    Bounded: at most `max_clients` clients are tracked; the one that failed longest ago is forgotten first.
    """

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW, max_clients: int = MAX_CLIENTS):
        self.max_failures = max_failures
        self.window = window
        self.max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
        return times

    def blocked(self, client: str) -> float | None:
        """Seconds until the client may try again, or None when it may try now."""
        now = time.monotonic()
        times = self._recent(client, now)
        if len(times) < self.max_failures:
            return None
        return max(times[0] + self.window - now, 0.0)

    def failed(self, client: str) -> None:
        now = time.monotonic()
        times = self._failures.pop(client, None) or deque(maxlen=self.max_failures)
        times.append(now)
        self._failures[client] = times  # re-inserted: dict order = least recently failed first
        while len(self._failures) > self.max_clients:
            del self._failures[next(iter(self._failures))]
