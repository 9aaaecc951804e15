"""Real audio rigs for the tests (see ../shared/RIGS.md).

ALSA reads its configuration once per process, so the asoundrc is written and
`XDG_CONFIG_HOME` set when this module is imported (conftest imports it first), before any
ALSA call. File-backed PCMs read/write fixed paths under :data:`RIG_DIR` that tests fill
before opening; the PulseAudio "room" (null sink + ALSA pulse plugin) is started on demand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

RIG_DIR = Path(tempfile.mkdtemp(prefix="agentd-rig-"))
CAPTURE_FILE = RIG_DIR / "capture.raw"  # testcap: S16_LE 16 kHz mono
CAPTURE48_FILE = RIG_DIR / "capture48.raw"  # testcap48: S16_LE 48 kHz stereo
PLAYBACK_FILE = RIG_DIR / "playback.raw"  # testplay: S16_LE 48 kHz mono
PULSE_SOCKET = RIG_DIR / "pulse" / "native"

ASOUNDRC = f"""
pcm.testcap_raw {{ type file; slave.pcm "null"; file "/dev/null"; infile "{CAPTURE_FILE}"; format "raw" }}
pcm.testcap {{ type plug; slave {{ pcm "testcap_raw"; format S16_LE; rate 16000; channels 1 }} }}
pcm.testcap48_raw {{ type file; slave.pcm "null"; file "/dev/null"; infile "{CAPTURE48_FILE}"; format "raw" }}
pcm.testcap48 {{ type plug; slave {{ pcm "testcap48_raw"; format S16_LE; rate 48000; channels 2 }} }}
pcm.testplay_raw {{ type file; slave.pcm "null"; file "{PLAYBACK_FILE}"; format "raw" }}
pcm.testplay {{ type plug; slave {{ pcm "testplay_raw"; format S16_LE; rate 48000; channels 1 }} }}
pcm.mic {{ type pulse; server "unix:{PULSE_SOCKET}"; device "room.monitor" }}
pcm.spk {{ type pulse; server "unix:{PULSE_SOCKET}"; device "room" }}
"""


def install_asoundrc() -> None:
    (RIG_DIR / "alsa").mkdir(exist_ok=True)
    (RIG_DIR / "alsa" / "asoundrc").write_text(ASOUNDRC)
    os.environ["XDG_CONFIG_HOME"] = str(RIG_DIR)
    CAPTURE_FILE.write_bytes(b"")
    CAPTURE48_FILE.write_bytes(b"")


class PulseRoom:
    """A PulseAudio null sink `room`: what is played into it is heard on its monitor."""

    def __init__(self) -> None:
        self.dir = PULSE_SOCKET.parent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.dir),
            "XDG_RUNTIME_DIR": str(self.dir),
            "PULSE_SERVER": f"unix:{PULSE_SOCKET}",
        }

    def start(self) -> PulseRoom:
        if shutil.which("pulseaudio") is None:
            raise RuntimeError("pulseaudio is not installed (scripts/test installs it)")
        self.dir.mkdir(exist_ok=True)
        pa = self.dir / "default.pa"
        pa.write_text(
            "load-module module-null-sink sink_name=room rate=48000 channels=2\n"
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={PULSE_SOCKET}\n"
        )
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
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ok = (
                subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode == 0
            )
            if ok:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("pulseaudio did not start")

    def play(self, wav: Path) -> subprocess.Popen[bytes]:
        """Speak into the room (returns at once; wait() on the result to finish)."""
        return subprocess.Popen(
            ["paplay", f"--server=unix:{PULSE_SOCKET}", "--device=room", str(wav)], env=self.env
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def espeak(text: str, rate: int, path: Path) -> np.ndarray:
    """Deterministic speech (espeak-ng, resampled by sox -R) as int16 at ``rate``."""
    wav = path.with_suffix(".wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
    raw = path.with_suffix(".raw")
    subprocess.run(
        [
            "sox",
            "-R",
            str(wav),
            "-r",
            str(rate),
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(raw),
        ],
        check=True,
    )
    return np.frombuffer(raw.read_bytes(), dtype="<i2").copy()


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path
