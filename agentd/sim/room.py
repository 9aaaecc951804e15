"""A real-time audio "room" without a sound card: a PulseAudio null sink heard through the
ALSA pulse plugin. Used by `agentd demo` on machines with no sound card, and by the tests and
benches (whose measuring helpers live in tests/room_oracle.py, outside the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path


def asoundrc(socket: Path) -> str:
    """ALSA PCMs `mic` (the room's monitor) and `spk` (into the room); `earmic` hears the
    room through the echo path rig (agentd/sim/echo_path.py) while that runs."""
    return (
        f'pcm.mic {{ type pulse; server "unix:{socket}"; device "room.monitor" }}\n'
        f'pcm.spk {{ type pulse; server "unix:{socket}"; device "room" }}\n'
        f'pcm.earmic {{ type pulse; server "unix:{socket}"; device "ear.monitor" }}\n'
        f'pcm.earspk {{ type pulse; server "unix:{socket}"; device "ear" }}\n'
    )


def write_asoundrc(config_home: Path, text: str) -> Path:
    """Write ``text`` as ``config_home``/alsa/asoundrc (world-readable: a sandboxed user reads
    it too). ALSA reads it from ``$XDG_CONFIG_HOME`` once per process, at its first call, so
    the caller points XDG_CONFIG_HOME at ``config_home`` before that."""
    path = config_home / "alsa" / "asoundrc"
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)
    return path


class PulseRoom:
    """A PulseAudio null sink `room`: what is played into it is heard on its monitor."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.socket = directory / "native"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.dir),
            "XDG_RUNTIME_DIR": str(self.dir),
            "PULSE_SERVER": f"unix:{self.socket}",
        }

    def start(self) -> PulseRoom:
        """Start the sound server; a start that fails is tried again (a server that was just
        killed can leave its socket behind for a moment) and then named with its own log."""
        if shutil.which("pulseaudio") is None:
            raise RuntimeError("pulseaudio is not installed (scripts/test installs it)")
        self.dir.mkdir(exist_ok=True)
        pa = self.dir / "default.pa"
        pa.write_text(
            "load-module module-null-sink sink_name=room rate=48000 channels=2\n"
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
        )
        for _ in range(3):
            if self._launch(pa):
                return self
            self.stop()
            self.socket.unlink(missing_ok=True)
        raise RuntimeError(f"pulseaudio did not start; its log ends:\n{self.log_tail()}")

    def _launch(self, pa: Path) -> bool:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    "pulseaudio",
                    "-n",
                    "-F",
                    str(pa),
                    "--daemonize=no",
                    "--exit-idle-time=-1",
                    "--use-pid-file=no",
                    "--log-target=stderr",
                ],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.alive():
                return True
            time.sleep(0.1)
        return self.alive()  # once more: the caller itself may have been stalled meanwhile

    @property
    def log(self) -> Path:
        return self.dir / "pulseaudio.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        """The server runs and answers (what every test in the room needs first)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            info = subprocess.run(["pactl", "info"], env=self.env, capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:  # (or this process could not read its answer)
            return False
        return info.returncode == 0

    def ensure(self) -> PulseRoom:
        """Bring the room back if an earlier test left it down, so one failure stays one."""
        if not self.alive():
            self.stop()
            self.start()
        return self

    def play(self, wav: Path) -> subprocess.Popen[bytes]:
        """Speak into the room (returns at once; wait() on the result to finish)."""
        return subprocess.Popen(
            ["paplay", f"--server=unix:{self.socket}", "--device=room", str(wav)], env=self.env
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
