"""Hypothesis-generated server frames through the codec and the state machine (issue 8):
right-shaped events with random fields, truncated JSON, wrong types, huge strings and binary
frames. No exception may escape and the state machine must stay in a valid state."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentd import conversation as cv
from agentd.config import from_mapping
from agentd.realtime.codec import CODECS, ProtocolError

TYPES = [
    "session.created",
    "session.updated",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "conversation.item.added",
    "conversation.item.created",
    "response.output_item.added",
    "response.created",
    "response.output_audio.delta",
    "response.audio.delta",
    "response.output_audio.done",
    "response.audio.done",
    "response.output_audio_transcript.delta",
    "response.audio_transcript.delta",
    "response.output_audio_transcript.done",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "response.done",
    "error",
    "rate_limits.updated",
    "something.new",
]
FIELDS = [
    "item_id",
    "response_id",
    "content_index",
    "delta",
    "transcript",
    "item",
    "response",
    "error",
    "session",
    "rate_limits",
    "audio_end_ms",
    "audio_start_ms",
    "status",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["x" * 70000, "é" * 20000, "A" * 100001]),
    st.sampled_from(["AAAA", "AAE=", "not base64!", "", "%%%"]),
)
KEYS = st.sampled_from(
    [*FIELDS, "id", "role", "code", "message", "reason", "status_details", "type"]
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(
        KEYS, st.one_of(scalars, st.dictionaries(KEYS, scalars, max_size=2)), max_size=4
    ),
)
events = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)}, optional={f: values for f in FIELDS}
)
frames = st.one_of(
    events.map(json.dumps),
    events.map(json.dumps).flatmap(
        lambda s: st.integers(0, max(0, len(s) - 1)).map(lambda n: s[:n])
    ),
    st.binary(max_size=300),
    st.text(max_size=200),
    st.sampled_from(['{"type": 1}', "[]", "null", '{"type": "error", "error": "flat string"}']),
)
inputs = st.sampled_from(
    [
        cv.Press(),
        cv.Release(),
        cv.Talk(),
        cv.Interrupt(),
        cv.Mute(),
        cv.DoublePress(),
        cv.SpeechStart(),
        cv.SpeechEnd(),
        cv.BargeIn(),
        cv.AudioSent(200),
        cv.PlaybackFinished(),
        cv.LinkUp(),
        cv.LinkDown("x"),
        cv.Tick(),
        cv.LongHold(),
    ]
)
steps = st.lists(
    st.one_of(frames.map(lambda f: ("frame", f)), inputs.map(lambda i: ("input", i))), max_size=8
)

FUZZ_EXAMPLES = int(__import__("os").environ.get("AGENTD_FUZZ_EXAMPLES", "10000"))
CONFIGS = {m: from_mapping({"turn": {"mode": m}}) for m in ("push_to_talk", "toggle", "hands_free")}
CODEC_LIST = [cls(user_id="fuzz") for cls in CODECS.values()]


def check_invariants(c: cv.Conversation) -> None:
    assert isinstance(c.state, cv.State)
    assert c.streaming == (c.state is cv.State.LISTENING)
    if c.state is cv.State.IDLE:
        assert c.connected
    assert c.sent_ms >= 0 and min(vars(c.counters).values()) >= 0


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
@given(
    steps=steps,
    dialect=st.integers(0, 2),
    mode=st.sampled_from(["push_to_talk", "toggle", "hands_free"]),
)
def test_fuzzed_frames_never_escape_and_state_stays_valid(
    steps: list[tuple[str, Any]], dialect: int, mode: str
) -> None:
    codec = CODEC_LIST[dialect]
    c = cv.Conversation.from_config(CONFIGS[mode])
    c.handle(cv.LinkUp(), 0.0)
    now = 0.0
    for kind, item in steps:
        now += 0.37
        if kind == "frame":
            if isinstance(item, bytes):
                continue  # the link drops binary frames before the codec (see connection._dispatch)
            try:
                parsed = codec.parse(item)
            except ProtocolError:
                continue
            for event in parsed:
                for inp in cv.server_inputs(event):
                    c.handle(inp, now)
        else:
            c.handle(item, now)
        check_invariants(c)
