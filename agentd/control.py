"""The control socket: JSON lines over a unix socket (mode 0660), and `agentd ctl`.

One request per line, ``{"cmd": "status"}``; one JSON answer per line. ``press``/``release``
go through exactly the same path as the physical button.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("agentd.control")

#: the one table of commands: the socket, the daemon and `agentd ctl` all read it
COMMANDS = ("status", "press", "release", "talk", "interrupt", "mute", "unmute", "reload")
MAX_LINE = 4096

Handler = Callable[[str], Awaitable[dict[str, Any]]]


class ControlServer:
    def __init__(self, path: str, handler: Handler) -> None:
        self.path = Path(path)
        self.handler = handler
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.server = await asyncio.start_unix_server(
                self._client, str(self.path), limit=MAX_LINE
            )
            os.chmod(self.path, 0o660)
        except OSError as exc:
            log.warning(
                "control socket %s unavailable: %s (agentd ctl will not work)", self.path, exc
            )
            return False
        return True

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    cmd = req["cmd"] if isinstance(req, dict) else None
                except ValueError:
                    cmd = None
                if cmd not in COMMANDS:
                    answer: dict[str, Any] = {
                        "ok": False,
                        "error": f"unknown command; use one of {', '.join(COMMANDS)}",
                    }
                else:
                    try:
                        answer = await self.handler(cmd)
                    except Exception as exc:  # a bad command must never take the daemon down
                        log.exception("control command %s failed", cmd)
                        answer = {"ok": False, "error": str(exc)}
                writer.write((json.dumps(answer) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 0.5)
            self.server = None
        with contextlib.suppress(OSError):
            self.path.unlink()


def request(path: str | Path, cmd: str, timeout: float = 5.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall((json.dumps({"cmd": cmd}) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    result: dict[str, Any] = json.loads(buf)
    return result


def ctl_main(command: str, socket_path: Path | None = None, config_path: Path | None = None) -> int:
    """`agentd ctl CMD`: the socket from --socket, else from the config, else the default."""
    if socket_path is None:
        from agentd.config import DEFAULT_CONFIG_PATH, ConfigError, ControlSettings, load

        path: str = ControlSettings().socket
        with contextlib.suppress(ConfigError):
            path = load(config_path or DEFAULT_CONFIG_PATH, require_key=False).config.control.socket
        socket_path = Path(path)
    try:
        answer = request(socket_path, command)
    except FileNotFoundError:
        print(f"agentd is not running (no control socket at {socket_path})", file=sys.stderr)
        return 1
    except PermissionError:
        print(
            f"permission denied on {socket_path}: run with sudo or join group agentd",
            file=sys.stderr,
        )
        return 1
    except (ConnectionError, OSError) as exc:
        print(f"cannot reach agentd at {socket_path}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if command == "status" else json.dumps(answer))
    return 0 if answer.get("ok", True) else 1
