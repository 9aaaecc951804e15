"""A loudspeaker → room → microphone echo path that is not a pure delay, for tests and benches.

What a cheap speaker in a plastic box with a separate USB microphone does to the echo, in order:
a soft-clipping loudspeaker, a room impulse response (direct path after a bulk delay, then an
exponentially decaying reverberant tail, RT60 ≈ 0.3 s), a clock drift between the playback and
capture cards (resampled by 1 + ppm·1e-6), and background noise about 40 dB below the echo of
speech. :class:`EchoPath` is pure (blocks in, blocks out) so the bench runs the same path
offline; :class:`EchoRig` runs it in real time between two PulseAudio null sinks:

    daemon → ALSA `spk` → sink `room` → ALSA `mic` (room.monitor) → this path → ALSA `earspk`
           → sink `ear` → ALSA `earmic` (ear.monitor) → daemon;   a near-end talker is
           mixed in by that process on cue (:class:`Talker`), at a known moment.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from agentd.audio.pcm import to_float, to_int16

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
RIG_BLOCK = 2 * BLOCK  # the rig's process works 20 ms at a time
RIG_CAPTURE_PERIODS = 25  # 0.5 s of capture buffer: the process may be held up that long
RIG_OUT_PERIODS = 10  # 0.2 s of output buffer ...
RIG_PREFILL_S = 0.12  # ... kept this full: part of the echo's bulk delay
# This many capture reads in a row that did not wait: a backlog, dropped. A backlog from the
# process being late is what the output buffer lost meanwhile: kept, the echo's delay stays;
# dropped, it jumps by what was dropped and AEC3 leaked at -30 dBFS while it re-learned (the
# real daemon cut its answers after each 20 ms drop at 3). Only a longer one is dropped.
RIG_BACKLOG_BLOCKS = 8
STARTUP_S = 1.5  # the rig drops its record stream's start-up backlog this long


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


class Talker:
    """Near-end speech mixed in at the microphone on cue: ``say`` drops 16 kHz int16 audio
    into ``cue_dir``; the rig's process mixes it in from its next block and writes the
    monotonic time its first sample reaches the microphone's sink (``.started``: after the
    rig's own output buffer, which is no part of a room) and a ``.done`` marker."""

    def __init__(self, cue_dir: Path) -> None:
        self.dir = cue_dir
        self.n = 0

    def say(self, pcm: np.ndarray) -> Path:
        self.n += 1
        path = self.dir / f"cue-{self.n:04d}.raw"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(np.asarray(pcm, "<i2").tobytes())
        tmp.rename(path)
        return path

    @staticmethod
    def started(cue: Path) -> float | None:
        mark = cue.with_suffix(".started")
        return float(mark.read_text()) if mark.exists() else None

    @staticmethod
    def mixed(cue: Path) -> float | None:
        """When the rig's process mixed it in (before its output buffer)."""
        mark = cue.with_suffix(".mixed")
        return float(mark.read_text()) if mark.exists() else None

    @staticmethod
    def done(cue: Path) -> bool:
        return cue.with_suffix(".done").exists()


def _mixer(cue_dir: Path, enters: Callable[[], float]) -> Iterator[np.ndarray | None]:
    """Per block: the near-end samples to add (float32), or None. ``enters()``: when the
    block being mixed reaches the sink (monotonic)."""
    playing: list[tuple[Path, np.ndarray]] = []
    while True:
        for entry in sorted(cue_dir.glob("cue-*.raw")):
            x = to_float(np.fromfile(entry, "<i2"))
            entry.with_suffix(".mixed").write_text(repr(time.monotonic()))
            entry.with_suffix(".started").write_text(repr(enters()))
            entry.rename(entry.with_suffix(".playing"))
            playing.append((entry, x))
        if not playing:
            yield None
            continue
        mix = np.zeros(BLOCK, np.float32)
        left = []
        for entry, x in playing:
            k = min(BLOCK, x.size)
            mix[:k] += x[:k]
            if x.size > BLOCK:
                left.append((entry, x[BLOCK:]))
            else:
                entry.with_suffix(".done").write_text("")
        playing = left
        yield mix


def run_filter(src: str = "mic", dst: str = "earspk", drift_ppm: float = DRIFT_PPM,
               cue_dir: Path | None = None) -> None:  # fmt: skip
    """The rig's middle process: ALSA ``src`` (the room's monitor) through the path into ALSA
    ``dst`` (the sink ``ear``), RIG_BLOCK at a time, paced by the capture; blocking writes
    into an output buffer prefilled with RIG_PREFILL_S, so a late process (a loaded machine)
    does not run the sink dry: each run dry restarted the ear stream with another latency,
    a jump in the echo delay (a real room has none), and a non-blocking write that found the
    buffer full dropped a block (another jump). A backlog (the sound
    server hands a new record stream's first second at once) would become echo delay for
    good, since both ends run at real time: in the first STARTUP_S, capture reads that return
    at once twice in a row are stale and dropped; after that, from the RIG_BACKLOG_BLOCKS-th
    such read on (the sound server held audio back while the process was late, or started
    the record stream with a backlog later): kept, each backlog would add to the echo delay
    for good (measured: 0.8-1.3 s in the daemon, beyond what AEC3 can find); dropped, the
    echo has a gap, as when the speaker's sound is masked, and its delay stays."""
    import alsaaudio

    fmt = {"rate": RATE, "channels": 1, "format": alsaaudio.PCM_FORMAT_S16_LE}
    cap = alsaaudio.PCM(
        alsaaudio.PCM_CAPTURE, device=src, periods=RIG_CAPTURE_PERIODS, periodsize=RIG_BLOCK,
        **fmt,
    )  # fmt: skip
    out = alsaaudio.PCM(
        alsaaudio.PCM_PLAYBACK, device=dst, periods=RIG_OUT_PERIODS, periodsize=RIG_BLOCK, **fmt
    )
    out.write(bytes(2 * int(RATE * RIG_PREFILL_S)))  # margin against this process being late
    out_frames = RIG_OUT_PERIODS * RIG_BLOCK
    path = EchoPath(drift_ppm=drift_ppm)
    enters = 0.0  # when the block being mixed reaches the sink: after what the buffer holds
    mixer = _mixer(cue_dir, lambda: enters) if cue_dir is not None else None
    instant = 0
    start = time.monotonic()
    while True:
        t = time.monotonic()
        n, data = cap.read()
        instant = instant + 1 if time.monotonic() - t < 0.002 else 0
        if n < 0:
            print("echo path rig: capture overrun", file=sys.stderr, flush=True)
        if n <= 0 or instant >= (2 if t - start < STARTUP_S else RIG_BACKLOG_BLOCKS):
            if n > 0 and t - start >= STARTUP_S:  # a jump in the echo's delay: said
                print(f"echo path rig: {n * 1000 // RATE} ms of backlog dropped",
                      file=sys.stderr, flush=True)  # fmt: skip
            continue
        x = to_float(data[: n * 2])
        y = path.process(x)
        if mixer is not None:
            held = out_frames - out.avail()
            for i in range(0, y.size, BLOCK):
                enters = time.monotonic() + (max(0, held) + i) / RATE
                near = next(mixer)
                if near is not None:
                    k = min(near.size, y.size - i)
                    y[i : i + k] += near[:k]
        if out.write(to_int16(y)) < 0:
            print("echo path rig: playback underrun", file=sys.stderr, flush=True)


class EchoRig:
    """The echo path in real time inside a running :class:`~agentd.sim.room.PulseRoom`: adds
    the sink ``ear`` and runs room.monitor through :class:`EchoPath` into it (ALSA PCMs from
    :func:`agentd.sim.room.asoundrc`, read from ``$XDG_CONFIG_HOME`` in ``env``)."""

    def __init__(self, socket: Path, env: dict[str, str]) -> None:
        self.server = f"unix:{socket}"
        self.cue_dir = socket.parent / "ear-cues"
        self.talker = Talker(self.cue_dir)
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.module: str | None = None

    def start(self) -> EchoRig:
        out = subprocess.run(
            ["pactl", f"--server={self.server}", "load-module", "module-null-sink",
             "sink_name=ear", "rate=48000", "channels=2"],
            env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        self.module = out.stdout.strip()
        self.cue_dir.mkdir(parents=True, exist_ok=True)
        mid = subprocess.Popen(
            [sys.executable, "-m", "agentd.sim.echo_path", str(self.cue_dir)], env=self.env
        )
        self.procs = [mid]
        return self

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
    run_filter(cue_dir=Path(sys.argv[1]) if len(sys.argv) > 1 else None)
