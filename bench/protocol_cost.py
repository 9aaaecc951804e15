"""CPU seconds per audio-second: the project's codec vs the openai-python SDK's event path.

Both sides do the same work on the same messages in the same run: encode 20 ms
`input_audio_buffer.append` events (base64 + JSON) and decode a matching stream of
`response.output_audio.delta` events (JSON → typed event → PCM bytes). The SDK side is
what its realtime connection does: `maybe_transform` + `json.dumps` to send,
`construct_type_unchecked` into `RealtimeServerEvent` to receive. Target: ratio ≤ 0.5.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from openai._models import construct_type_unchecked
from openai._utils import maybe_transform
from openai.types.realtime import RealtimeClientEventParam, RealtimeServerEvent

from agentd.audio.frame import chop
from agentd.config import from_mapping
from agentd.realtime import client_events as ce
from agentd.realtime.codec import codec_for

AUDIO_S = 60
RATE = 24000
TARGET = 0.5


def messages() -> tuple[list[bytes], list[str]]:
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(RATE * AUDIO_S) * 3000).astype("<i2").tobytes()
    chunks = [f.audio for f in chop(audio, RATE, 20)]  # 20 ms appends
    frames = [
        json.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": f"event_{i * len(delta.audio)}",
                "response_id": "resp_1",
                "item_id": "item_1",
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(delta.audio).decode(),
            }
        )
        for i, delta in enumerate(chop(audio, RATE, 100))  # 100 ms deltas, as servers send
    ]
    return chunks, frames


def ours(chunks: list[bytes], frames: list[str]) -> int:
    cfg = from_mapping({})
    codec = codec_for(cfg.api.dialect, cfg.device.user_id)
    total = 0
    for c in chunks:
        total += len(codec.encode(ce.AppendAudio(c)))
    for f in frames:
        for e in codec.parse(f):
            total += len(e.pcm)  # type: ignore[union-attr]
    return total


def sdk(chunks: list[bytes], frames: list[str]) -> int:
    total = 0
    for c in chunks:
        event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(c).decode()}
        total += len(json.dumps(maybe_transform(event, RealtimeClientEventParam)))
    for f in frames:
        e = cast(
            Any, construct_type_unchecked(value=json.loads(f), type_=cast(Any, RealtimeServerEvent))
        )
        total += len(base64.b64decode(e.delta))
    return total


def cpu(fn: Any, *args: Any, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn(*args)
        best = min(best, time.process_time() - t0)
    return best


def main() -> dict[str, float]:
    chunks, frames = messages()
    ours(chunks, frames), sdk(chunks, frames)  # warm-up
    a, b = cpu(ours, chunks, frames), cpu(sdk, chunks, frames)
    result = {
        "ours_cpu_per_audio_s": a / AUDIO_S,
        "sdk_cpu_per_audio_s": b / AUDIO_S,
        "ratio": a / b,
    }
    print(
        f"protocol codec CPU per audio-second: agentd {result['ours_cpu_per_audio_s'] * 1e3:.3f} ms, "
        f"openai-python {result['sdk_cpu_per_audio_s'] * 1e3:.3f} ms, "
        f"ratio {result['ratio']:.3f} (target ≤ {TARGET})"
    )
    return result


if __name__ == "__main__":
    main()
