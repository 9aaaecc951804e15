"""Supervision: one bad event never stops the daemon, and a dead task never goes unnoticed.

An exception in one handler (a server frame, a microphone frame, a button press) is caught
where it happens, counted and logged: the first one with its traceback, then at most one
line a minute per place, so a fault that repeats on every frame cannot flood the journal.
A long-lived task that still ends is restarted; when it keeps ending, the daemon exits
non-zero and systemd (Restart=always) starts it afresh. Pure bookkeeping: the clock is
passed in, the caller does the restarting.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable

REPEAT_LOG_S = 60.0  # a handler that keeps failing is said once a minute
RESTART_DELAY_S = 1.0
RESTART_BUDGET = 5  # restarts of one task within RESTART_WINDOW_S before giving up
RESTART_WINDOW_S = 300.0


class HandlerErrors:
    """Counts exceptions per place and rate-limits what reaches the log."""

    def __init__(
        self,
        log: logging.Logger,
        every_s: float = REPEAT_LOG_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.every_s = every_s
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._said: dict[str, tuple[float, int]] = {}  # place → (when, count then)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def record(self, where: str, exc: BaseException) -> None:
        self.counts[where] += 1
        now, n = self.clock(), self.counts[where]
        said = self._said.get(where)
        if said is None:
            self._said[where] = (now, n)
            self.log.error(
                "internal error in %s (%s: %s); carrying on",
                where,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        elif now - said[0] >= self.every_s:
            self._said[where] = (now, n)
            self.log.error(
                "internal error in %s again, %d times in the last %.0f s (%s: %s); carrying on",
                where,
                n - said[1],
                now - said[0],
                type(exc).__name__,
                exc,
            )


class RestartBudget:
    """Whether a task that ended may be restarted once more, or the process should exit."""

    def __init__(
        self,
        budget: int = RESTART_BUDGET,
        window_s: float = RESTART_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget, self.window_s, self.clock = budget, window_s, clock
        self.restarts: Counter[str] = Counter()
        self._recent: dict[str, deque[float]] = {}

    @property
    def total(self) -> int:
        return sum(self.restarts.values())

    def allow(self, name: str) -> bool:
        now = self.clock()
        recent = self._recent.setdefault(name, deque())
        while recent and now - recent[0] > self.window_s:
            recent.popleft()
        if len(recent) >= self.budget:
            return False
        recent.append(now)
        self.restarts[name] += 1
        return True
