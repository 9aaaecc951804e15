"""Compressed wire formats (issue 26): what each costs on the network, in CPU and in delay.

- bytes per second on the wire per format and direction, counting the whole WebSocket text
  frame (JSON envelope + base64), from the real codec (uplink appends) and the simulator's
  delta events (downlink), over espeak-ng speech;
- codec CPU per audio-second, encode and decode (process time, this machine);
- first-sample latency the codec adds: audio that must arrive before the decoder gives its
  first sample (downlink), and that the encoder holds before its first packet (uplink);
  target ≤ one packet; for MP3 also when the answer's first sample comes (by content: the
  stream keeps the server's encoder delay, which no tag names) and what the decoder alone
  holds back (untrimmed output: frames fed before the first sample, less the one that
  carries it);
- end-to-end turn per format: the real daemon and simulator in the PulseAudio room, release
  → first answer audio handed to ALSA, and the whole turn (release → idle).

.venv/bin/python bench/wire.py
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DIR = Path(tempfile.mkdtemp(prefix="agentd-bench-wire-"))
os.environ["XDG_CONFIG_HOME"] = str(DIR)  # before the first ALSA call

import numpy as np  # noqa: E402
import soxr  # noqa: E402
import yaml  # noqa: E402

from agentd import conversation as cv  # noqa: E402
from agentd.audio import codecs  # noqa: E402
from agentd.audio.codecs.mp3 import Mp3Decoder  # noqa: E402
from agentd.audio.frame import chop  # noqa: E402
from agentd.audio.pcm import to_float, to_int16  # noqa: E402
from agentd.config import load  # noqa: E402
from agentd.realtime import client_events as ce  # noqa: E402
from agentd.realtime.codec import codec_for  # noqa: E402
from agentd.service import Daemon, Hooks  # noqa: E402
from agentd.sim import Simulator, speech  # noqa: E402
from agentd.sim import wire as sim_wire  # noqa: E402
from agentd.sim.room import PulseRoom, asoundrc, write_asoundrc  # noqa: E402

TEXT = (
    "The weather on the moon is cold at night and hot in the day. There is no air, so there "
    "is no wind and no rain, and the sky is always black."
)
UP = {  # format → (dialect, rate)
    "pcm (OpenAI 24 kHz)": ("openai", "pcm", 24000),
    "pcm (xStar 16 kHz)": ("xstar", "pcm", 16000),
    "opus 16 kHz 60 ms 24 kbit/s": ("xstar", "opus", 16000),
    "g711_ulaw": ("openai", "g711_ulaw", 8000),
}
DOWN = {
    "pcm (24 kHz)": ("pcm", 24000, {}),
    "mp3 24 kHz 48 kbit/s": ("mp3", 24000, {"mp3_cuts": "frames"}),
    "opus 16 kHz 20 ms 24 kbit/s": ("opus", 16000, {"opus_frame_ms": 20}),
    "g711_ulaw": ("g711_ulaw", 8000, {}),
}


def source(rate: int) -> bytes:
    pcm = speech.espeak_pcm(TEXT, 16000) if speech.available() else None
    if pcm is None:
        t = np.arange(16000 * 8) / 16000
        x = 0.3 * np.sin(2 * np.pi * 300 * t * (1 + 0.1 * np.sin(t)))
    else:
        x = to_float(pcm)
    return to_int16(soxr.resample(x, 16000, rate)) if rate != 16000 else to_int16(x)


def uplink_bytes() -> dict[str, float]:
    out = {}
    for name, (dialect, fmt, rate) in UP.items():
        pcm = source(rate)
        seconds = len(pcm) / 2 / rate
        enc = codecs.encoder(fmt, rate, frame_ms=60 if fmt == "opus" else 20)
        codec = codec_for(dialect, "bench")
        step = rate // 50 * 2  # the gate's 20 ms frames
        frames = []
        for i in range(0, len(pcm), step):
            frames += [codec.encode(ce.AppendAudio(p)) for p in enc.encode(pcm[i : i + step])]
        frames += [codec.encode(ce.AppendAudio(p)) for p in enc.flush()]
        out[name] = sum(len(f.encode()) for f in frames) / seconds
    return out


def downlink_bytes() -> dict[str, float]:
    out = {}
    for name, (fmt, rate, style) in DOWN.items():
        pcm = source(rate)
        deltas = (
            [(f.audio, 0.0) for f in chop(pcm, rate, 100, tail=True)]
            if fmt == "pcm"
            else sim_wire.deltas(pcm, fmt, rate, sim_wire.WireStyle(**style))
        )
        frames = [
            json.dumps(
                {
                    "type": "response.output_audio.delta",
                    "event_id": "event_00000000000000000000",
                    "response_id": "resp_0000000000000000000000",
                    "item_id": "item_0000000000000000000000",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": base64.b64encode(d).decode(),
                },
                separators=(",", ":"),
            )
            for d, _ in deltas
        ]
        out[name] = sum(len(f) for f in frames) / (len(pcm) / 2 / rate)
    return out


def cpu() -> dict[str, float]:
    """Process seconds per audio-second, encode and decode, 20 runs each."""
    out = {}
    for fmt, rate in (("opus", 16000), ("g711_ulaw", 8000)):
        pcm = source(rate)
        secs = len(pcm) / 2 / rate
        t = time.process_time()
        for _ in range(20):
            enc = codecs.encoder(fmt, rate)
            for i in range(0, len(pcm), rate // 50 * 2):
                enc.encode(pcm[i : i + rate // 50 * 2])
        out[f"encode {fmt}"] = (time.process_time() - t) / 20 / secs
    for fmt, rate, style in DOWN.values():
        if fmt == "pcm":
            continue
        pcm = source(rate)
        secs = len(pcm) / 2 / rate
        deltas = [d for d, _ in sim_wire.deltas(pcm, fmt, rate, sim_wire.WireStyle(**style))]
        t = time.process_time()
        for _ in range(20):
            dec = codecs.decoder(fmt, rate)
            for d in deltas:
                dec.feed(d)
        out[f"decode {fmt}"] = (time.process_time() - t) / 20 / secs
    return out


def first_sample() -> dict[str, tuple[float, float]]:
    """(audio ms that must arrive before the first decoded sample, one packet's ms)."""
    out = {}
    for name, fmt, rate, style, packet_ms in (
        ("mp3 (one frame per delta)", "mp3", 24000, {"mp3_cuts": "frames"}, 24.0),
        ("mp3 (4 frames per delta)", "mp3", 24000, {"mp3_cuts": "frames"}, 96.0),
        ("opus raw 20 ms", "opus", 16000, {"opus_frame_ms": 20}, 20.0),
        ("opus raw 60 ms", "opus", 16000, {"opus_frame_ms": 60}, 60.0),
        ("opus in Ogg", "opus", 16000, {"opus_ogg": True}, 100.0),
        ("g711_ulaw", "g711_ulaw", 8000, {}, 100.0),
    ):
        pcm = source(rate)
        stream = sim_wire.deltas(pcm, fmt, rate, sim_wire.WireStyle(**style))
        if packet_ms == 24.0:  # frame by frame: how many frames before mpg123 gives a sample
            data = b"".join(d for d, _ in stream)
            stream = [(data[i : i + 144], 24.0) for i in range(0, len(data), 144)]
        dec = codecs.decoder(fmt, rate)
        fed = 0.0
        for d, ms in stream:
            fed += ms
            if dec.feed(d):
                break
        out[name] = (fed, packet_ms)
    # the answer's first sample, by content: the decoded stream carries the encoder's delay
    # (LAME's 576 samples; no tag names it, so it is not cut), found by correlation with the
    # source; its first sample comes with the frame that completes output sample ``lag``
    pcm = source(24000)
    frames = sim_wire.deltas(pcm, "mp3", 24000, sim_wire.WireStyle(mp3_cuts="frames"))
    data = b"".join(d for d, _ in frames)
    got = to_float(Mp3Decoder(24000).feed(data))
    lag = lag_samples(got, to_float(pcm))
    dec, have, fed = Mp3Decoder(24000), 0, 0.0
    for i in range(0, len(data), 144):
        fed += 24.0
        have += len(dec.feed(data[i : i + 144])) // 2
        if have > lag:
            break
    out[f"mp3 content (+{lag * 1000 / 24000:.1f} ms in)"] = (fed, 24.0)
    # what the decoder itself holds back: mpg123's read-ahead kept a stream's first frame
    # until the second came; untrimmed, so no delay cut at the start hides it
    raw = Mp3Decoder(24000, trim=False)
    fed = 0.0
    for i in range(0, len(data), 144):
        fed += 24.0
        if raw.feed(data[i : i + 144]):
            break
    out["mp3 decoder hold-back"] = (fed, 24.0)
    out["uplink opus 60 ms"] = (60.0, 60.0)  # the encoder holds one packet by design
    return out


def lag_samples(got: np.ndarray, ref: np.ndarray) -> int:
    """Samples by which ``ref`` is late in ``got``, by cross-correlation."""
    n = len(got) + len(ref)
    c = np.fft.irfft(np.fft.rfft(got, n) * np.conj(np.fft.rfft(ref, n)), n)
    lag = int(np.argmax(c))
    return lag - n if lag > n // 2 else lag


def opus_settings() -> list[tuple[int, int, float, float]]:
    """(kbit/s, complexity, encode CPU per audio-second, correlation with the source) for the
    README's choice of defaults (correlation at the best lag, as tests/test_wire.py takes it)."""
    pcm = source(16000)
    secs = len(pcm) / 2 / 16000
    x = to_float(pcm)
    rows = []
    for kbps in (12, 16, 24, 32):
        for cx in (0, 5, 10):
            t = time.process_time()
            for _ in range(5):
                enc = codecs.encoder("opus", 16000, bitrate=kbps * 1000, complexity=cx)
                packets = [p for i in range(0, len(pcm), 640) for p in enc.encode(pcm[i : i + 640])]
            cost = (time.process_time() - t) / 5 / secs
            dec = codecs.decoder("opus", 16000)
            y = to_float(b"".join(dec.feed(p) for p in packets))
            n = len(y) + len(x)
            c = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)
            lag = int(np.argmax(c))
            lag = lag - n if lag > n // 2 else lag
            a, b = (y[lag:], x) if lag >= 0 else (y, x[-lag:])
            m = min(len(a), len(b))
            rows.append((kbps, cx, cost, float(np.corrcoef(a[:m], b[:m])[0, 1])))
    return rows


async def turns(room: PulseRoom) -> dict[str, tuple[float, float]]:
    out = {}
    for name, dialect, wire in (
        ("pcm (openai)", "openai", {}),
        ("g711_ulaw (openai)", "openai", {"input": "g711_ulaw", "output": "g711_ulaw"}),
        ("opus/opus (xstar)", "xstar", {"input": "opus", "output": "opus"}),
        ("opus/mp3 (xstar)", "xstar", {"input": "opus", "output": "mp3"}),
    ):
        firsts, totals = [], []
        async with Simulator(dialect, pace=1.0) as sim:
            sim.reply = "It is cold on the moon tonight."
            path = DIR / "c.yaml"
            data: dict[str, Any] = {
                "api": {"url": sim.url, "dialect": dialect},
                "audio": {
                    "input": {"device": "mic", "rate": 48000, "channels": 2},
                    "output": {"device": "spk", "rate": 48000, "buffer_ms": 60},
                    "wire": wire,
                },
                "button": {"pin": None},
                "led": {"pin": None},
                "sounds": {"enabled": False},
                "control": {"socket": str(DIR / "ctl.sock")},
                "logging": {"level": "warning"},
            }
            path.write_text(yaml.safe_dump(data))
            d = Daemon(path, load(path, require_key=False), Hooks(use_gpio=False))
            task = asyncio.create_task(d.run())
            while not d.conv.connected or d.playback is None:
                await asyncio.sleep(0.01)
            handed: list[float] = []
            play = d.playback.play

            def timed(*a: Any, _play: Any = play, _at: list[float] = handed, **k: Any) -> None:
                _play(*a, **k)
                if a and a[0] and a[1] is not None:
                    _at.append(time.monotonic())

            d.playback.play = timed  # type: ignore[method-assign]
            said = source(16000)[: 16000 * 2 * 2]  # 2 s of speech
            for _ in range(3):
                d.feed(cv.Press())
                for f in chop(said, 16000, 20, start=time.monotonic()):
                    d._on_mic(f)
                handed.clear()
                t = time.monotonic()
                d.feed(cv.Release())
                while not handed:
                    await asyncio.sleep(0.001)
                firsts.append((handed[0] - t) * 1000)
                while d.conv.state.value != "idle":
                    await asyncio.sleep(0.005)
                totals.append(time.monotonic() - t)
            d.stop_event.set()
            await task
        out[name] = (float(np.median(firsts)), float(np.median(totals)))
    return out


def main() -> dict[str, float]:
    up, down, c, first = uplink_bytes(), downlink_bytes(), cpu(), first_sample()
    print("bytes per second on the wire (JSON + base64 frames):")
    for k, v in up.items():
        print(f"  up   {k:32s} {v / 1000:6.2f} kB/s")
    for k, v in down.items():
        print(f"  down {k:32s} {v / 1000:6.2f} kB/s")
    print("codec CPU per audio-second (this machine):")
    for k, v in c.items():
        print(f"  {k:20s} {v * 100:.3f} % of a core")
    print("first-sample latency the codec adds (audio that must arrive first / one packet):")
    for k, (ms, packet) in first.items():
        print(f"  {k:28s} {ms:5.0f} ms / {packet:.0f} ms")
    print("Opus uplink settings: kbit/s, complexity → encode CPU, correlation with the source:")
    for kbps, cx, cost, corr in opus_settings():
        print(f"  {kbps:2d} kbit/s, complexity {cx:2d}: {cost * 100:.2f} % of a core, {corr:.3f}")
    room = PulseRoom(DIR / "pulse").start()
    try:
        write_asoundrc(DIR, asoundrc(room.socket))
        e2e = asyncio.run(turns(room))
    finally:
        room.stop()
    print("end-to-end turn in the room (median of 3): release → first answer audio, whole turn")
    for k, (first_ms, total) in e2e.items():
        print(f"  {k:20s} {first_ms:6.1f} ms  {total:5.2f} s")
    stream_cpu = c["encode opus"] + max(c["decode opus"], c["decode mp3"])
    return {
        "opus_up_Bps": up["opus 16 kHz 60 ms 24 kbit/s"],
        "pcm_up_Bps": up["pcm (OpenAI 24 kHz)"],
        "g711_up_Bps": up["g711_ulaw"],
        "mp3_down_Bps": down["mp3 24 kbit/s"]
        if "mp3 24 kbit/s" in down
        else down["mp3 24 kHz 48 kbit/s"],
        "pcm_down_Bps": down["pcm (24 kHz)"],
        "opus_down_Bps": down["opus 16 kHz 20 ms 24 kbit/s"],
        "codec_cpu_stream": stream_cpu,
        "first_sample_worst_over_packet_ms": max(
            ms - p for k, (ms, p) in first.items() if not k.startswith("mp3 content")
        ),
        "mp3_first_sample_frames": first["mp3 (one frame per delta)"][0] / 24.0,
        "mp3_first_content_frames": next(
            ms for k, (ms, _) in first.items() if k.startswith("mp3 content")
        )
        / 24.0,
        "mp3_decoder_holdback_ms": first["mp3 decoder hold-back"][0] - 24.0,
        "e2e_first_audio_ms_pcm": e2e["pcm (openai)"][0],
        "e2e_first_audio_ms_worst": max(v[0] for v in e2e.values()),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
