"""Shared fixtures. Topic-specific fixtures live in the test modules that need them."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import rigs
from tests.harness import Harness, NotifySocket, write_config

rigs.install_asoundrc()  # before any ALSA call in this process
# The room's clients (the daemon's pulse PCMs, paplay, pactl) pass audio through the socket,
# not shared memory: libpulse 16.1 deadlocks in pa_memimport_free when the server dies while a
# capture fragment it handed out is held, which made test_sound_server_vanishes_and_returns a
# coin toss (the daemon's answer to that wedge, a new thread, has its own test:
# test_a_microphone_thread_wedged_in_its_driver_is_left_behind_for_a_new_one).
os.environ["PULSE_CLIENTCONFIG"] = str(rigs.RIG_DIR / "pulse-client.conf")
(rigs.RIG_DIR / "pulse-client.conf").write_text("enable-shm = no\nenable-memfd = no\n")

from agentd import logs  # noqa: E402
from agentd.config import load  # noqa: E402
from agentd.service import Daemon, Hooks  # noqa: E402
from agentd.sim import Simulator  # noqa: E402

# One test (setup, call and teardown) running this long is hung: the run ends there, with every
# thread's traceback, instead of running into CI's own limit. faulthandler's timer is a C thread:
# it fires even when a thread stuck in C holds the GIL, which stops every Python-level timer
# (pyalsaaudio's avail() on PulseAudio's plugin, wedged by its server's death, froze a whole
# CI run that way for 90 minutes).
HUNG_S = 300.0
HUNG_SLOW_S = 1200.0
_stderr_fd = -1  # the terminal's stderr, kept before pytest captures fd 2 for each test


def pytest_configure(config: pytest.Config) -> None:
    global _stderr_fd
    _stderr_fd = os.dup(2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    limit = HUNG_SLOW_S if item.get_closest_marker("slow") else HUNG_S
    faulthandler.dump_traceback_later(limit, exit=True, file=_stderr_fd)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _reset_secrets() -> Iterator[None]:
    saved = set(logs._secrets)
    yield
    logs._secrets.clear()
    logs._secrets.update(saved)


@pytest.fixture(autouse=True)
def _state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a daemon keeps across restarts (mute) stays in the test's own directory."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))


@pytest.fixture(autouse=True)
def _restore_log_levels() -> Iterator[None]:
    """A daemon run in-process sets the root level from its config: undo it after each test."""
    root = logging.getLogger()
    saved = root.level
    yield
    root.setLevel(saved)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every log record at DEBUG, through the same redaction filter the daemon uses."""
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(logs.RedactFilter())
    return caplog


@pytest.fixture(autouse=True)
def schema_oracle(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every client event the project encodes, in every test, is validated strictly against
    the pinned openai-python types; so is every event the simulator sends."""
    from agentd.realtime import codec
    from agentd.sim import server
    from tests import oracle

    seen: list[tuple[str, str]] = []
    violations: list[str] = []

    def checked_client(dialect: str, frame: str) -> None:
        oracle.validate_client(dialect, frame)
        seen.append((dialect, frame))

    def checked_server(dialect: str, frame: str) -> None:
        try:
            oracle.validate_server(dialect, frame)
        except oracle.SchemaViolation as exc:
            violations.append(str(exc))
            raise

    monkeypatch.setattr(codec, "FRAME_CHECKS", [checked_client])
    monkeypatch.setattr(server.Simulator, "default_validate", checked_server)
    yield seen
    assert not violations, f"simulator sent events the SDK rejects: {violations[:3]}"


@pytest.fixture(scope="session")
def room_server() -> Iterator[rigs.PulseRoom]:
    r = rigs.PulseRoom(rigs.PULSE_SOCKET.parent).start()
    yield r
    r.stop()


@pytest.fixture
def room(room_server: rigs.PulseRoom) -> rigs.PulseRoom:
    """The real-time PulseAudio room (null sink `room`; ALSA PCMs `mic` and `spk`), started
    once per session and checked before each test (a test that stops it and fails to bring it
    back must not fail every test after it)."""
    return room_server.ensure()


@pytest.fixture
async def harness(
    room: rigs.PulseRoom,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Harness]:
    """The daemon in-process on the PulseAudio room, the simulator and a real NOTIFY_SOCKET."""
    async with running_daemon(tmp_path, monkeypatch, dict(getattr(request, "param", {}))) as h:
        yield h


@pytest.fixture
async def fake_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    """The same daemon with in-memory microphone and speaker (tests/fakes.py), no PulseAudio:
    for tests of what the daemon decides, not of what the user hears. The speaker plays on
    the real clock, so answers take their real time."""
    from tests.fakes import FakeCapture, FakePlayback

    over = dict(getattr(request, "param", {}))
    over["hooks"] = {
        "make_capture": FakeCapture,
        "make_playback": functools.partial(FakePlayback, clock=time.monotonic),
        **over.get("hooks", {}),
    }
    async with running_daemon(tmp_path, monkeypatch, over) as h:
        yield h


@contextlib.asynccontextmanager
async def running_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, over: dict[str, Any]
) -> AsyncIterator[Harness]:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    hooks = over.pop("hooks", {})  # Hooks fields: adapters built another way
    notify = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    sim = await Simulator(over.pop("dialect", "openai"), pace=1.0).start()
    sim.heard = "what is the time"
    cfg_path = write_config(tmp_path / "config.yaml", sim, tmp_path, **over)
    factory = MockFactory(pin_class=MockPWMPin)
    states: list[tuple[float, str]] = []
    daemon = Daemon(
        cfg_path,
        load(cfg_path),
        Hooks(
            pin_factory=factory,
            on_state=lambda s: states.append((time.monotonic(), s)),
            **hooks,
        ),
    )
    task = asyncio.create_task(daemon.run())
    h = Harness(daemon, sim, notify, factory, task)
    h.states = states
    try:
        await notify.wait_for("READY=1")
        await h.until(lambda: h.state() == "idle")
        await asyncio.sleep(1.0)  # the connected cue has played out
        yield h
    finally:
        daemon.stop_event.set()
        await asyncio.wait_for(task, 5)
        await sim.stop()
        Device.pin_factory = None
        factory.reset()
