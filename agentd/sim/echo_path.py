"""A loudspeaker → room → microphone echo path that is not a pure delay, for tests and benches.

What a cheap speaker in a plastic box with a separate USB microphone does to the echo, in order:
a soft-clipping loudspeaker, a room impulse response (direct path after a bulk delay, then an
exponentially decaying reverberant tail, RT60 ≈ 0.3 s), a clock drift between the playback and
capture cards (resampled by 1 + ppm·1e-6), and background noise about 40 dB below the echo of
speech. :class:`EchoPath` is pure (blocks in, blocks out) so the bench runs the same path
offline; :class:`EchoRig` runs it in real time between two PulseAudio null sinks:

    daemon → ALSA `spk` → sink `room` → parec room.monitor → this path → pacat → sink `ear`
           → ALSA `earmic` (ear.monitor) → daemon;   a near-end talker: paplay into `ear`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

RATE = 16000
BLOCK = RATE // 100  # 10 ms
RT60_S = 0.3
BULK_DELAY_MS = 12  # speaker → mic distance and converter delay
ECHO_GAIN = 0.5  # echo level at the mic relative to what was played (-6 dB)
DRIVE = 2.5  # loudspeaker soft clip: y = tanh(DRIVE·x) / DRIVE
DRIFT_PPM = 100.0
# espeak speech played at volume 1.0 reaches the mic at ≈ -27 dBFS RMS through this path;
# noise 40 dB below that (bench/echo.py prints the measured SNR)
NOISE_RMS = 10 ** ((-27 - 40) / 20)


def room_response(rt60: float = RT60_S, rate: int = RATE, seed: int = 1) -> np.ndarray:
    """A synthetic room impulse response: bulk delay, a direct path, a few early reflections
    and a diffuse tail decaying 60 dB in ``rt60`` seconds; energy normalised to ECHO_GAIN²."""
    rng = np.random.default_rng(seed)
    n = int(rate * rt60 * 1.2)
    t = np.arange(n) / rate
    h = rng.standard_normal(n) * 10 ** (-3 * t / rt60) * 0.35
    d = int(rate * BULK_DELAY_MS / 1000)
    h[:d] = 0.0
    h[d] = 1.0
    for ms, g in ((3.1, -0.5), (7.4, 0.35), (11.9, -0.25)):
        h[d + int(rate * ms / 1000)] += g
    return (h * ECHO_GAIN / np.sqrt(np.sum(h * h))).astype(np.float32)


def echo_rms(play: np.ndarray) -> float:
    """RMS of ``play``'s echo at the microphone over its voiced samples (what a signal-to-echo
    ratio is measured against)."""
    y = EchoPath(drift_ppm=0, noise_rms=0).process(np.asarray(play, np.float32))
    return float(np.sqrt(np.mean(y[np.abs(y) > 1e-3] ** 2)))


class EchoPath:
    """Streaming: ``process(block)`` of float32 mono at 16 kHz returns the mic's echo (its
    length drifts by ``drift_ppm``). Deterministic for a seed."""

    def __init__(
        self,
        rt60: float = RT60_S,
        drift_ppm: float = DRIFT_PPM,
        noise_rms: float = NOISE_RMS,
        drive: float = DRIVE,
        seed: int = 1,
    ) -> None:
        import soxr

        self.h = room_response(rt60, seed=seed)
        self.drive = drive
        self.noise_rms = noise_rms
        self._tail = np.zeros(self.h.size - 1, np.float32)
        self._rng = np.random.default_rng(seed + 1000)
        self._drift = (
            soxr.ResampleStream(RATE, RATE * (1 + drift_ppm * 1e-6), 1, dtype="float32")
            if drift_ppm
            else None
        )

    def speaker(self, x: np.ndarray) -> np.ndarray:
        return (np.tanh(self.drive * x) / self.drive).astype(np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        y = self.speaker(np.asarray(x, np.float32))
        n = y.size + self.h.size - 1
        size = 1 << (n - 1).bit_length()
        full = np.fft.irfft(np.fft.rfft(y, size) * np.fft.rfft(self.h, size), size)[:n]
        full[: self._tail.size] += self._tail
        out, self._tail = full[: y.size], full[y.size :].astype(np.float32)
        if self._drift is not None:
            out = self._drift.resample_chunk(out.astype(np.float32))
        noise = self._rng.standard_normal(out.size) * self.noise_rms
        return (out + noise).astype(np.float32)


def run_filter(drift_ppm: float = DRIFT_PPM) -> None:
    """stdin → stdout, raw s16le mono 16 kHz, 10 ms at a time (the rig's middle process)."""
    path = EchoPath(drift_ppm=drift_ppm)
    src, dst = sys.stdin.buffer, sys.stdout.buffer
    while True:
        data = src.read(BLOCK * 2)
        if not data:
            return
        x = np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float32) / 32768
        y = np.clip(np.round(path.process(x) * 32768), -32768, 32767).astype("<i2")
        dst.write(y.tobytes())
        dst.flush()


class EchoRig:
    """The echo path in real time inside a running :class:`~agentd.sim.room.PulseRoom`: adds
    the sink ``ear`` and pipes room.monitor through :class:`EchoPath` into it."""

    def __init__(self, socket: Path, env: dict[str, str]) -> None:
        self.server = f"unix:{socket}"
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.module: str | None = None

    def start(self) -> EchoRig:
        out = subprocess.run(
            ["pactl", f"--server={self.server}", "load-module", "module-null-sink",
             "sink_name=ear", "rate=16000", "channels=1"],
            env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        self.module = out.stdout.strip()
        fmt = ["--raw", "--format=s16le", "--rate=16000", "--channels=1", "--latency-msec=10"]
        rec = subprocess.Popen(
            ["parec", f"--server={self.server}", "--device=room.monitor", *fmt],
            env=self.env, stdout=subprocess.PIPE,
        )  # fmt: skip
        mid = subprocess.Popen(
            [sys.executable, "-m", "agentd.sim.echo_path"],
            stdin=rec.stdout, stdout=subprocess.PIPE, env=self.env,
        )  # fmt: skip
        play = subprocess.Popen(
            ["pacat", f"--server={self.server}", "--device=ear", "--playback", *fmt],
            env=self.env, stdin=mid.stdout,
        )  # fmt: skip
        self.procs = [rec, mid, play]
        return self

    def talk(self, wav: Path) -> subprocess.Popen[bytes]:
        """A near-end talker at the microphone (returns at once; wait() on it)."""
        return subprocess.Popen(
            ["paplay", f"--server={self.server}", "--device=ear", str(wav)], env=self.env
        )

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []
        if self.module is not None:
            subprocess.run(
                ["pactl", f"--server={self.server}", "unload-module", self.module],
                env=self.env, capture_output=True,
            )  # fmt: skip
            self.module = None


if __name__ == "__main__":
    run_filter()
