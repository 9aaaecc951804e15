"""Reconnect timing: exponential backoff with full jitter, a stability reset and an auth floor.

Pure (the clock and the random source are passed in) so the "no tight loop on a bad key"
promise can be checked over a simulated ten minutes without waiting ten minutes.
"""

from __future__ import annotations

import random
from collections.abc import Callable

STABLE_S = 60.0  # a connection that lived this long resets the backoff
AUTH_FAILURES_BEFORE_FLOOR = 2


class Backoff:
    def __init__(
        self,
        initial_s: float,
        max_s: float,
        rng: Callable[[], float] = random.random,
        stable_s: float = STABLE_S,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max(max_s, initial_s)
        self.stable_s = stable_s
        self._rng = rng
        self.attempt = 0
        self.auth_failures = 0
        self._up_since: float | None = None

    def next_delay(self) -> float:
        """Full jitter: uniform in [initial, min(max, initial·2ⁿ)]; after repeated auth
        failures never below ``max_s`` (a rejected key must not hammer the server)."""
        if self.auth_failures >= AUTH_FAILURES_BEFORE_FLOOR:
            return self.max_s
        cap = min(self.max_s, self.initial_s * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return self.initial_s + self._rng() * (cap - self.initial_s)

    def failed(self, auth: bool = False) -> None:
        """A connection attempt failed (``auth`` when the key was rejected)."""
        self.auth_failures = self.auth_failures + 1 if auth else 0

    def connected(self, now: float) -> None:
        self.auth_failures = 0
        self._up_since = now

    def disconnected(self, now: float) -> None:
        if self._up_since is not None and now - self._up_since >= self.stable_s:
            self.attempt = 0
        self._up_since = None
