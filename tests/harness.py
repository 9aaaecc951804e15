"""The real daemon in-process for end-to-end tests: simulator on loopback, the PulseAudio
room as mic and speaker, gpiozero's MockFactory for button and LED, a real NOTIFY_SOCKET
and control socket. The `harness` fixture (conftest) builds one per test."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from agentd.audio.frame import AudioFrame
from agentd.service import Daemon
from agentd.sim import Simulator


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            self.messages.append((time.monotonic(), data.decode()))
        return [m for _, m in self.messages]

    async def wait_for(self, text: str, timeout: float = 10) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            for t, m in self.messages:
                if text in m:
                    return t
            await asyncio.sleep(0.01)
        raise AssertionError(f"{text!r} never sent; got {[m for _, m in self.messages]}")


def write_config(path: Path, sim: Simulator, tmp: Path, **over: Any) -> Path:
    data: dict[str, Any] = {
        "api": {"dialect": sim.dialect, "url": sim.url},
        "device": {"user_id": "test-pi"},
        "agent": {"transcription": "whisper-1"},
        "audio": {
            "input": {"device": "mic", "rate": 48000, "channels": 2},
            "output": {"device": "spk", "rate": 48000, "buffer_ms": 60},
        },
        "control": {"socket": str(tmp / "ctl.sock")},
        "logging": {"level": "debug", "transcripts": True},
    }
    for key, value in over.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    path.write_text(yaml.safe_dump(data))
    return path


class Harness:
    def __init__(
        self,
        daemon: Daemon,
        sim: Simulator,
        notify: NotifySocket,
        factory: Any,
        task: asyncio.Task[int],
    ):
        self.daemon, self.sim, self.notify, self.factory, self.task = (
            daemon,
            sim,
            notify,
            factory,
            task,
        )
        self.states: list[tuple[float, str]] = []

    async def until(self, pred: Any, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"timed out; states {[s for _, s in self.states]}"
            await asyncio.sleep(0.005)

    def state(self) -> str:
        return self.daemon.conv.state.value

    def mic(self, frame: AudioFrame) -> None:
        """Speak one frame into the daemon through its microphone's own delivery callback
        (the real capture keeps listening to the room meanwhile)."""
        cap = self.daemon.capture
        assert cap is not None, "the daemon has no microphone yet"
        cap.on_frame(frame)


def run_demo(*args: str, expect: tuple[str, ...]) -> str:
    """`agentd demo --sound-card no *args` as a user runs it (no user config, no API key):
    it must exit 0 and print every line of ``expect``; returns its output."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "OPENAI_API_KEY")}
    out = subprocess.run(
        [sys.executable, "-m", "agentd", "demo", "--sound-card", "no", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for line in expect:
        assert line in out.stdout, out.stdout
    return out.stdout
