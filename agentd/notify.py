"""sd_notify over $NOTIFY_SOCKET (no libsystemd needed), and the watchdog's health rule."""

from __future__ import annotations

import logging
import os
import socket
import time

from agentd import logs

log = logging.getLogger("agentd.notify")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET")
        self.addr: str | None = None
        self.sock: socket.socket | None = None
        if addr:
            self.addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.setblocking(False)  # never stall the loop on a slow or full receiver
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_s: float | None = None
        if usec and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6

    def send(self, *fields: str) -> None:
        if self.sock is None or self.addr is None:
            return
        try:
            self.sock.sendto("\n".join(fields).encode(), self.addr)
        except OSError as exc:  # includes BlockingIOError: a dropped STATUS is harmless
            log.debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", _status(status))

    def status(self, status: str) -> None:
        self.send(_status(status))

    def reloading(self) -> None:
        self.send(
            "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _status(text: str) -> str:
    """A STATUS= field: one line (a newline in server text would start a forged field such
    as WATCHDOG=1), secrets redacted as in the log."""
    return "STATUS=" + logs.escape(logs.redact(text))
