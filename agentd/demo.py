"""`agentd demo`: the real daemon against the bundled simulator, one scripted turn.

No API key and no hardware needed: without a sound card the microphone and speaker are a
PulseAudio null-sink "room" (the scripted user speaks into it with espeak-ng, the daemon
hears it through ALSA, and its answer plays back into the room). With a sound card the
default ALSA devices are used and the scripted speech comes out of the speaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_TEXT = "What time is it?"


def _time_answer(output: str) -> str:
    """The simulated model's answer from the get_time tool's output."""
    import json

    try:
        now = json.loads(output)
        return f"It is {now['time']} on {now['date']}."
    except (ValueError, KeyError, TypeError):
        return f"The clock tool said: {output}"


#: `--wire F`: the dialect that speaks F and audio.wire (xStar: Opus up; OpenAI: G.711)
WIRES: dict[str, tuple[str, dict[str, str]]] = {
    "pcm": ("openai", {"input": "pcm", "output": "pcm"}),
    "opus": ("xstar", {"input": "opus", "output": "opus"}),
    "mp3": ("xstar", {"input": "opus", "output": "mp3"}),
    "g711_ulaw": ("openai", {"input": "g711_ulaw", "output": "g711_ulaw"}),
    "g711_alaw": ("openai", {"input": "g711_alaw", "output": "g711_alaw"}),
}


def _user_wav(text: str, wav: Path) -> bool:
    """The scripted user's words as a 16 kHz WAV; False when espeak-ng is missing (a tone)."""
    import numpy as np

    from agentd.audio.pcm import to_int16
    from agentd.sim import speech

    if speech.available():
        speech.write_wav(wav, speech.espeak_pcm(text, 16000), 16000)
        return True
    t = np.arange(16000 * 2) / 16000
    x = 0.3 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 3 * t) > -0.3)
    speech.write_wav(wav, to_int16(x), 16000)
    return False


def demo_main(
    text: str | None = None, sound_card: str = "auto", wake_word: bool = False, wire: str = "pcm"
) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="agentd-demo-"))
    os.environ["STATE_DIRECTORY"] = str(tmp)  # a mute left by a daemon run by hand stays there
    room: Any = None
    if sound_card == "auto":
        import alsaaudio  # reading the card list loads ALSA's config: only when asked "auto"

        has_card = bool(alsaaudio.cards())
    else:
        has_card = sound_card == "yes"
    if not has_card:
        from agentd.sim.room import PulseRoom, asoundrc, write_asoundrc

        room = PulseRoom(tmp / "pulse")
        write_asoundrc(tmp, asoundrc(room.socket))
        os.environ["XDG_CONFIG_HOME"] = str(tmp)  # before the daemon's first ALSA call
        print("no sound card: using a PulseAudio null-sink room as microphone and speaker")
        try:
            room.start()
        except RuntimeError as exc:
            print(f"cannot start the audio room: {exc}", file=sys.stderr)
            return 1
    try:
        return asyncio.run(_demo(text or DEFAULT_TEXT, tmp, room, wake_word, wire))
    finally:
        if room is not None:
            room.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def _demo(text: str, tmp: Path, room: Any, wake_word: bool = False, wire: str = "pcm") -> int:
    from agentd import logs
    from agentd.config import Loaded, from_mapping, summary
    from agentd.service import Daemon, Hooks
    from agentd.sim import Simulator

    logs.setup_logging("warning")
    dialect, formats = WIRES[wire]
    sim = await Simulator(dialect, pace=1.0).start()
    sim.heard = text  # the simulator has no speech recogniser: it reports the scripted words
    # the simulated model calls the device's clock when asked the time (agent.tools builtin)
    sim.tool_rules = {"time": ("get_time", {})}
    sim.tool_reply = _time_answer
    devices = (
        {
            "input": {"device": "mic", "rate": 48000, "channels": 2},
            "output": {"device": "spk", "rate": 48000},
        }
        if room is not None
        else {}
    )
    cfg = from_mapping(
        {
            "api": {"dialect": dialect, "url": sim.url},
            "device": {"user_id": "demo"},
            "agent": {"transcription": "whisper-1"},
            "audio": {**devices, "wire": formats},
            "button": {"pin": None},
            "led": {"pin": None},
            "control": {"socket": str(tmp / "control.sock")},
            **({"turn": {"mode": "wake_word"}} if wake_word else {}),
        }
    )
    t0 = time.monotonic()
    states: list[str] = []
    changed = asyncio.Event()

    def on_state(s: str) -> None:
        states.append(s)
        print(f"[{time.monotonic() - t0:6.2f} s] state → {s}", flush=True)
        changed.set()

    def on_transcript(role: str, said: str) -> None:
        print(f"[{time.monotonic() - t0:6.2f} s] {role:9s}: {said}", flush=True)

    daemon = Daemon(
        tmp / "none.yaml",
        Loaded(cfg, None, (), ()),
        Hooks(use_gpio=False, on_state=on_state, on_transcript=on_transcript),
    )
    print(f"simulator on {sim.url}; daemon: {summary(cfg)}")
    task = asyncio.create_task(daemon.run())

    async def until(pred: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                return False
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.2)
        return True

    ok = await until(lambda: daemon.conv.state.value == "idle", 15)
    wav = tmp / "user.wav"
    if not _user_wav(text, wav):
        print("(espeak-ng or sox not installed: the user 'speaks' a tone)")
    if ok and wake_word:
        ok = await _wake_turn(daemon, sim, text, tmp, room, t0, until, states)
    elif ok:
        await asyncio.sleep(1.5)  # let the room settle after the connected cue
        print(f'[{time.monotonic() - t0:6.2f} s] button pressed; the user says: "{text}"')
        daemon.feed(__import__("agentd.conversation", fromlist=["Press"]).Press())
        player = room.play(wav) if room is not None else subprocess.Popen(["aplay", "-q", str(wav)])
        await asyncio.to_thread(player.wait, 30)
        await asyncio.sleep(0.4)
        print(f"[{time.monotonic() - t0:6.2f} s] button released")
        daemon.feed(__import__("agentd.conversation", fromlist=["Release"]).Release())
        ok = await until(lambda: "speaking" in states, 15) and await until(
            lambda: daemon.conv.state.value == "idle", 30
        )
    for e in sim.client_events("conversation.item.create"):
        if e["item"]["type"] == "function_call_output":
            print(f"tool call: the model called get_time; agentd answered {e['item']['output']}")
    status = daemon.status()
    daemon.stop_event.set()
    await task
    await sim.stop()
    print(f"turns {status['turns']}, state {status['state']}, last error {status['last_error']}")
    up = sum(len(e.get("audio", "")) for e in sim.client_events("input_audio_buffer.append"))
    print(f"wire {formats['input']} up / {formats['output']} down: {up} base64 bytes of audio sent")
    print("demo " + ("finished" if ok else "FAILED"))
    return 0 if ok else 1


async def _wake_turn(
    daemon: Any, sim: Any, text: str, tmp: Path, room: Any, t0: float, until: Any, states: list[str]
) -> bool:
    """Hands-free with the wake word: first speech without the word (nothing may be sent),
    then "okay nabu, <text>" in one go; the turn starts after the word."""
    await asyncio.sleep(1.5)
    play = (
        (lambda w: room.play(w))
        if room is not None
        else (lambda w: subprocess.Popen(["aplay", "-q", str(w)]))
    )
    before = _wav(tmp / "before.wav", "I wonder what the weather is like on the moon today")
    print(f'[{time.monotonic() - t0:6.2f} s] the user says (no wake word): "{before[1]}"')
    await asyncio.to_thread(play(before[0]).wait, 30)
    await asyncio.sleep(1.0)
    audio = [e for e in sim.events if e.event.get("type") == "input_audio_buffer.append"]
    print(f"[{time.monotonic() - t0:6.2f} s] audio events sent so far: {len(audio)}")
    said = f"okay nabu, {text}"
    wav = _wav(tmp / "wake.wav", said)
    print(f'[{time.monotonic() - t0:6.2f} s] the user says: "{said}"')
    await asyncio.to_thread(play(wav[0]).wait, 30)
    ok = await until(lambda: "speaking" in states, 20) and await until(
        lambda: daemon.conv.state.value == "idle", 30
    )
    wake = daemon.wake
    print(
        f"wake words heard: {wake.detections if wake else 0}; audio sent only after the word: "
        f"{len(audio) == 0}"
    )
    return ok and len(audio) == 0


def _wav(path: Path, text: str) -> tuple[Path, str]:
    _user_wav(text, path)
    return path, text
