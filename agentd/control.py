"""The control socket: JSON lines over a unix socket (mode 0660), and `agentd ctl`.

One request per line, ``{"cmd": "status"}``; one JSON answer per line. ``press``/``release``
go through exactly the same path as the physical button.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agentd import conversation as cv
from agentd import logs
from agentd.events_feed import EventsFeed

log = logging.getLogger("agentd.control")


@dataclass(frozen=True)
class Command:
    """One control command. ``feed``: the state machine input it stands for (exactly what
    the button gives); None for the two the daemon answers itself, status and reload."""

    help: str
    feed: cv.Input | None = None
    value: bool = False  # takes an optional "value" string: volume
    stream: bool = False  # answers with a stream of event lines until the client hangs up
    text: bool = False  # takes a "text" (and an "interrupt" flag): say, ask


#: the one table of commands: the socket, the daemon and `agentd ctl` all read it
COMMANDS: dict[str, Command] = {
    "status": Command("state, connection, dialect, last error and counters as JSON"),
    "press": Command("press the button", cv.Press()),
    "release": Command("release the button", cv.Release()),
    "talk": Command("start a turn, or end the current one", cv.Talk()),
    "interrupt": Command("stop the answer now", cv.Interrupt()),
    "mute": Command("stop listening until unmute (kept across restarts)", cv.Mute(True)),
    "unmute": Command("listen again", cv.Mute(False)),
    "reload": Command("re-read the config; a bad one is refused and the old one kept"),
    "volume": Command("show the speaker volume, or set it: N (0..100), up, down", value=True),
    "subscribe": Command("stream events as JSON lines (agentd ctl watch prints them)", stream=True),
    "say": Command("speak TEXT verbatim when idle (--interrupt: now)", text=True),
    "ask": Command("ask TEXT as a user turn and play the answer (--interrupt: now)", text=True),
}
WATCH = "watch"  # `agentd ctl watch`: a subscribe that prints each event line
TEXT_MAX = 2000  # characters of a say/ask text
MAX_LINE = 4096
MAX_CLIENTS = 8  # a stuck or hostile client cannot hold more than this many slots
IDLE_S = 60.0  # a client that sends nothing this long is closed, freeing its slot

Handler = Callable[..., Awaitable[dict[str, Any]]]  # (cmd, **args): value | text, interrupt


class SocketInUse(Exception):
    """Another agentd answers on the control socket: this one must not start."""


class ControlServer:
    def __init__(self, path: str, handler: Handler, feed: EventsFeed | None = None) -> None:
        self.path = Path(path)
        self.handler = handler
        self.feed = feed
        self.server: asyncio.AbstractServer | None = None
        self.clients = 0
        self._inode: int | None = None

    async def start(self) -> bool:
        """Listen; False (with one warning) when the socket cannot be made. Raises
        :class:`SocketInUse` when a live daemon owns the path (probed by connecting)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._remove_stale()
            self.server = await asyncio.start_unix_server(
                self._client, str(self.path), limit=MAX_LINE
            )
            os.chmod(self.path, 0o660)
            self._inode = self.path.lstat().st_ino
        except OSError as exc:
            log.warning(
                "control socket %s unavailable: %s (agentd ctl will not work)", self.path, exc
            )
            return False
        return True

    def _remove_stale(self) -> None:
        """Unlink the path only when it is a socket nobody answers on (left by a crash)."""
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        except PermissionError as exc:
            raise SocketInUse(
                f"cannot tell whether another agentd owns {self.path} ({exc.strerror}); "
                "run as its user, or stop it first"
            ) from None
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(
                errno.EEXIST, "exists and is not a socket; remove it or change control.socket"
            )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.path))
            except (ConnectionRefusedError, FileNotFoundError):
                pass  # stale: nobody listens
            except (PermissionError, TimeoutError) as exc:  # someone's; maybe a live daemon
                raise SocketInUse(
                    f"cannot tell whether another agentd owns {self.path} "
                    f"({exc.strerror or 'no answer'}); run as its user, or stop it first"
                ) from None
            else:
                raise SocketInUse(
                    f"another agentd is running: its control socket {self.path} answers "
                    "(stop it first, or give this one its own control.socket)"
                )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client: a JSON answer line per request line, whatever the line holds."""
        if self.clients >= MAX_CLIENTS:
            with contextlib.suppress(ConnectionError):
                await _write(writer, _error(f"too many control clients ({MAX_CLIENTS}); retry"))
            writer.close()
            return
        self.clients += 1
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_S)
                except TimeoutError:
                    break
                except ValueError:  # beyond the StreamReader limit (LimitOverrunError)
                    await _write(writer, _error(f"request longer than {MAX_LINE} bytes"))
                    break
                if not line:
                    break
                cmd, problem = parse_request(line)
                if cmd is not None and COMMANDS[cmd].stream and self.feed is not None:
                    await self.feed.serve(reader, writer)  # until the client hangs up
                    break
                if cmd is None:
                    answer = _error(problem)
                else:
                    try:
                        args = (
                            request_value(line)
                            if COMMANDS[cmd].value
                            else (request_args(line) if COMMANDS[cmd].text else {})
                        )
                        answer = await self.handler(cmd, **args)
                    except Exception as exc:  # a bad command must never take the daemon down
                        log.exception("control command %s failed", cmd)
                        answer = _error(f"{cmd} failed: {exc}")
                await _write(writer, answer)
        except ConnectionError:
            pass
        finally:
            self.clients -= 1
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 0.5)
            self.server = None
        with contextlib.suppress(OSError):  # only our own socket, never a successor's
            if self._inode is not None and self.path.lstat().st_ino == self._inode:
                self.path.unlink()
        self._inode = None


def parse_request(line: bytes) -> tuple[str | None, str]:
    """A request line → (command, "") or (None, what is wrong with it, in one sentence)."""
    try:
        req = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "request is not UTF-8 text"
    except RecursionError:
        return None, "request is nested too deeply"
    except ValueError:
        return None, 'request is not JSON; send one line like {"cmd": "status"}'
    if not isinstance(req, dict):
        return None, 'request must be a JSON object like {"cmd": "status"}'
    cmd = req.get("cmd")
    if not isinstance(cmd, str):
        return None, 'request has no "cmd" string'
    if cmd not in COMMANDS:
        return None, f"unknown command {cmd[:40]!r}; use one of {', '.join(COMMANDS)}"
    if COMMANDS[cmd].value and not isinstance(req.get("value", ""), str | int):
        return None, f'{cmd}: "value" must be a string or a number'
    if COMMANDS[cmd].text:
        text = req.get("text")
        if not isinstance(text, str) or not text.strip():
            return None, f'{cmd} needs a "text" string, e.g. {{"cmd": "{cmd}", "text": "hello"}}'
        if len(text) > TEXT_MAX:
            return None, f"{cmd}: text longer than {TEXT_MAX} characters"
        if not isinstance(req.get("interrupt", False), bool):
            return None, f'{cmd}: "interrupt" must be true or false'
    return cmd, ""


def request_value(line: bytes) -> dict[str, Any]:
    """A request's optional "value" (the line passed parse_request), as text."""
    value = json.loads(line.decode("utf-8")).get("value")
    return {} if value is None else {"value": str(value)}


def request_args(line: bytes) -> dict[str, Any]:
    """A say/ask request's text and interrupt flag (the line passed parse_request)."""
    req = json.loads(line.decode("utf-8"))
    return {"text": req["text"].strip(), "interrupt": bool(req.get("interrupt", False))}


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


async def _write(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
    """One line of JSON, secrets redacted like the log (a status may hold error texts)."""
    try:
        data = json.dumps(logs.redact_obj(answer))
    except (TypeError, ValueError) as exc:
        data = json.dumps(_error(f"internal error: answer not serialisable ({exc})"))
    writer.write((data + "\n").encode())
    await writer.drain()


def request(path: str | Path, cmd: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    result: dict[str, Any] = json.loads(buf)
    return result


def watch(path: str | Path, out: TextIO) -> int:
    """`agentd ctl watch`: print each event line until the daemon or the user ends it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall((json.dumps({"cmd": "subscribe"}) + "\n").encode())
        with s.makefile("r", encoding="utf-8") as lines:
            for line in lines:
                out.write(line)
                out.flush()
    return 0


def ctl_main(
    command: str,
    socket_path: Path | None = None,
    config_path: Path | None = None,
    value: str | None = None,
    text: str | None = None,
    interrupt: bool = False,
) -> int:
    """`agentd ctl CMD`: the socket from --socket, else from the config, else the default."""
    if value is not None and (command == WATCH or not COMMANDS[command].value):
        print(f"agentd ctl {command} takes no argument (got {value!r})", file=sys.stderr)
        return 2
    if socket_path is None:
        from agentd.config import DEFAULT_CONFIG_PATH, ConfigError, ControlSettings, load

        path: str = ControlSettings().socket
        with contextlib.suppress(ConfigError):
            path = load(config_path or DEFAULT_CONFIG_PATH, require_key=False).config.control.socket
        socket_path = Path(path)
    args: dict[str, Any] = {} if value is None else {"value": value}
    if command != WATCH and COMMANDS[command].text:
        if not text:
            print(f"agentd ctl {command} needs a TEXT argument", file=sys.stderr)
            return 2
        args = {"text": text, "interrupt": interrupt}
    try:
        if command == WATCH:
            return watch(socket_path, sys.stdout)
        answer = request(socket_path, command, **args)
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
