"""Hypothesis-generated server frames (issues 8 and 18): any JSON value in any field (objects
where strings belong, numbers as strings, nulls), nesting tens of thousands deep, huge strings,
binary frames, truncated JSON. Every frame must become typed events (each field the type its
event declares) or a counted protocol error.

Two levels: thousands of frames through every dialect's codec and the state machine, and a
few hundred through a real loopback WebSocket (the simulator's raw-frame injection) into the
real `Link` and the real daemon (PulseAudio room, MockFactory GPIO), which must keep its one
session and answer a spoken turn afterwards. Each case is tagged with the shapes it holds;
the counts are printed and stored in the pytest cache (`pytest --cache-show 'agentd/*'`)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import os
import types
import typing
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentd import conversation as cv
from agentd.audio.frame import AudioFrame
from agentd.config import from_mapping
from agentd.realtime import events as ev
from agentd.realtime.codec import CODECS, Codec, ProtocolError, codec_for
from tests.harness import Harness
from tests.test_faults import say

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
#: what each field holds in a well-formed event (for tagging "wrong-typed field")
FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "item_id": str,
    "response_id": str,
    "content_index": int,
    "delta": str,
    "transcript": str,
    "item": dict,
    "response": dict,
    "error": dict,
    "session": dict,
    "rate_limits": list,
    "audio_end_ms": int,
    "audio_start_ms": int,
    "status": str,
    "id": str,
    "role": str,
    "code": str,
    "message": str,
    "reason": str,
    "status_details": dict,
    "name": str,
    "remaining": (int, float),
    "reset_seconds": (int, float),
    "limit": (int, float),
}
NUMERIC = {"content_index", "audio_end_ms", "audio_start_ms", "remaining", "reset_seconds", "limit"}
FIELDS = [k for k in FIELD_TYPES if k not in ("id", "role", "code", "message", "reason", "name")]
HUGE = 65536
SHAPES = (
    "non-string code",
    "deep nesting",
    "binary",
    "huge string",
    "wrong-typed field",
    "number as string",
    "null field",
    "not JSON / not an object",
    "well-formed",
)

# ---------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["AAAA", "AAE=", "not base64!", "", "%%%", "12", "-3.5", "1e999"]),
    st.sampled_from(["a\nb", "\x1b[2J", "\u202e", "你好"]),
)
KEYS = st.sampled_from([*FIELD_TYPES, "type"])
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
non_string = st.one_of(
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), scalars, max_size=3),
)
errors = st.fixed_dictionaries(  # the issue's shape; `events` puts any value in "error" itself
    {
        "type": st.just("error"),
        "error": st.fixed_dictionaries(
            {"code": non_string}, optional={"message": values, "type": values, "event_id": values}
        ),
    }
)
ids = st.text("abcdef0123456789_", min_size=1, max_size=12)
words = st.text(min_size=0, max_size=40)
well_formed = st.one_of(
    st.builds(
        lambda i, r, d: {
            "type": "response.output_audio.delta",
            "item_id": i,
            "response_id": r,
            "content_index": 0,
            "delta": d,
        },
        ids,
        ids,
        st.binary(max_size=600).map(lambda b: base64.b64encode(b).decode()),
    ),
    st.builds(
        lambda i, t: {"type": "response.output_audio_transcript.delta", "item_id": i, "delta": t},
        ids,
        words,
    ),
    st.builds(
        lambda i, t: {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": i,
            "transcript": t,
        },
        ids,
        words,
    ),
    st.builds(lambda r: {"type": "response.created", "response": {"id": r}}, ids),
    st.builds(
        lambda r, s: {"type": "response.done", "response": {"id": r, "status": s}},
        ids,
        st.sampled_from(["completed", "cancelled", "failed", "incomplete"]),
    ),
    st.builds(
        lambda c, m: {
            "type": "error",
            "error": {"type": "invalid_request_error", "code": c, "message": m},
        },
        st.sampled_from(["invalid_value", "response_cancel_not_active", "rate_limit_exceeded"]),
        words,
    ),
    st.builds(
        lambda i, role: {"type": "conversation.item.added", "item": {"id": i, "role": role}},
        ids,
        st.sampled_from(["user", "assistant"]),
    ),
)
number_strings = st.builds(
    lambda kind, field, n: {"type": kind, field: str(n), "item_id": "it", "delta": "AAAA"},
    st.sampled_from(
        [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "response.output_audio.delta",
        ]
    ),
    st.sampled_from(["audio_start_ms", "audio_end_ms", "content_index"]),
    st.one_of(st.integers(-(10**6), 10**12), st.floats(allow_nan=True, allow_infinity=True)),
) | st.builds(
    lambda rem, reset: {
        "type": "rate_limits.updated",
        "rate_limits": [
            {"name": "requests", "limit": "100", "remaining": rem, "reset_seconds": reset}
        ],
    },
    st.integers(0, 10**6).map(str),
    st.floats(0, 3600).map(str),
)
huge = st.builds(
    lambda kind, field, n, ch: {"type": kind, "item_id": "it", field: ch * n},
    st.sampled_from(TYPES),
    st.sampled_from(["delta", "transcript", "item_id", "status"]),
    st.integers(HUGE, 4 * HUGE),
    st.sampled_from(["A", "é", "\n"]),
)


def _nest(n: int, where: str) -> str:
    if where == "bare":
        return "[" * n
    if where == "closed":
        return '{"type":"response.done","response":' + "[" * n + "]" * n + "}"
    return '{"type":"error","error":' + '{"code":' * n + "1" + "}" * n + "}"


deep = st.builds(_nest, st.integers(1001, 60000), st.sampled_from(["bare", "closed", "objects"]))
not_objects = st.one_of(
    events.map(json.dumps).flatmap(
        lambda s: st.integers(0, max(0, len(s) - 1)).map(lambda n: s[:n])
    ),
    st.text(max_size=200),
    st.sampled_from(['{"type": 1}', "[]", "null", "3", '"text"', '{"no_type": 1}']),
)


def _walk(value: Any, key: str | None, tags: set[str], depth: int = 0) -> None:
    if isinstance(value, str) and len(value) >= HUGE:
        tags.add("huge string")
    if key is not None and key in FIELD_TYPES and key != "type":
        want = FIELD_TYPES[key]
        if value is None:
            tags.add("null field")
        elif key in NUMERIC and isinstance(value, str):
            with_number = value.strip().lstrip("+-").replace(".", "", 1).replace("e", "", 1)
            tags.add("number as string" if with_number.isdigit() else "wrong-typed field")
        elif isinstance(value, bool) or not isinstance(value, want):
            tags.add("wrong-typed field")
        if key == "code" and value is not None and not isinstance(value, str):
            tags.add("non-string code")
    if isinstance(value, dict):
        for k, v in value.items():
            _walk(v, k, tags, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _walk(v, None, tags, depth + 1)


def tags_of(event: dict[str, Any]) -> frozenset[str]:
    tags: set[str] = set()
    _walk(event, None, tags)
    if event.get("type") == "error" and not isinstance(event.get("error"), dict | None):
        tags.add("wrong-typed field")
    return frozenset(tags or {"well-formed"})


Frame = tuple[frozenset[str], str | bytes]
shaped: st.SearchStrategy[Frame] = st.one_of(
    events.map(lambda e: (tags_of(e), json.dumps(e))),
    errors.map(lambda e: (tags_of(e), json.dumps(e))),
    well_formed.map(lambda e: (tags_of(e), json.dumps(e))),
    number_strings.map(lambda e: (tags_of(e), json.dumps(e))),
    huge.map(lambda e: (tags_of(e), json.dumps(e))),
    deep.map(lambda f: (frozenset({"deep nesting"}), f)),
    st.binary(max_size=4096).map(lambda b: (frozenset({"binary"}), b)),
    not_objects.map(lambda f: (frozenset({"not JSON / not an object"}), f)),
)

#: one hand-written frame of each shape (the issue's two first)
ONE_OF_EACH: list[Frame] = [
    (
        frozenset({"non-string code", "wrong-typed field"}),
        '{"type":"error","error":{"code":{"x":1},"message":"boom"}}',
    ),
    (frozenset({"deep nesting"}), "[" * 50000),
    (frozenset({"binary"}), bytes(range(256))),
    (
        frozenset({"huge string"}),
        json.dumps(
            {"type": "response.audio_transcript.delta", "item_id": "i", "delta": "x" * HUGE}
        ),
    ),
    (
        frozenset({"number as string"}),
        '{"type":"input_audio_buffer.speech_started","audio_start_ms":"120"}',
    ),
    (frozenset({"null field"}), '{"type":"response.created","response":null}'),
    (frozenset({"not JSON / not an object"}), '{"type": "response.created", "response": {'),
    (frozenset({"well-formed"}), '{"type":"input_audio_buffer.cleared"}'),
]

# ---------------------------------------------------------------- checks


def assert_typed(event: object) -> None:
    """Every field of a parsed event has the type its dataclass declares."""
    assert dataclasses.is_dataclass(event)
    hints = typing.get_type_hints(type(event))
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        assert _is(value, hints[f.name]), (type(event).__name__, f.name, value)


def _is(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin is tuple:
        (item, _) = typing.get_args(tp)
        return isinstance(value, tuple) and all(_is(v, item) for v in value)
    if tp is type(None):
        return value is None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, tp):  # type: ignore[arg-type]
            return False
        assert_typed(value)
        return True
    if tp is float:
        return isinstance(value, float) and value == value and abs(value) != float("inf")
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def parse_or_count(codec: Codec, frame: str | bytes) -> list[ev.ServerEvent] | None:
    """What the link does with a frame: typed events, or None for a (counted) protocol error."""
    if isinstance(frame, bytes):
        return None
    try:
        parsed = codec.parse(frame)
    except ProtocolError:
        return None
    for event in parsed:
        assert_typed(event)
    return parsed


def report(
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    name: str,
    counts: Counter[str],
    frames: int,
) -> None:
    """Print the shape counts (even under capture) and keep them in the pytest cache."""
    line = f"{name}: {frames} frames; " + ", ".join(f"{s}: {counts[s]}" for s in SHAPES)
    with capsys.disabled():
        print(f"\n[fuzz shapes] {line}")
    if request.config.cache is not None:
        key = "agentd/fuzz_shapes/" + name.replace(" ", "_")
        request.config.cache.set(key, {"frames": frames, **counts})
    missing = [s for s in SHAPES if counts[s] == 0]
    assert not missing, f"the strategies never produced {missing}"


# ---------------------------------------------------------------- codec + state machine

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
        cv.MicAudio(AudioFrame(bytes(6400), 16000)),
        cv.PlaybackFinished(),
        cv.LinkUp(),
        cv.LinkDown("x"),
        cv.Tick(),
        cv.LongHold(),
    ]
)
steps = st.lists(
    st.one_of(shaped.map(lambda f: ("frame", f)), inputs.map(lambda i: ("input", i))),
    max_size=10,
)

FUZZ_EXAMPLES = int(os.environ.get("AGENTD_FUZZ_EXAMPLES", "4000"))
DAEMON_EXAMPLES = int(os.environ.get("AGENTD_FUZZ_DAEMON_EXAMPLES", "120"))
CONFIGS = {m: from_mapping({"turn": {"mode": m}}) for m in ("push_to_talk", "toggle", "hands_free")}


def check_invariants(c: cv.Conversation) -> None:
    assert isinstance(c.state, cv.State)
    assert c.streaming == (c.state is cv.State.LISTENING)
    if c.state is cv.State.IDLE:
        assert c.connected
    assert c.sent_ms >= 0 and min(vars(c.counters).values()) >= 0


@pytest.mark.slow  # > 10 s: scripts/test-slow keeps the fast suite under 10 min
def test_fuzzed_frames_through_codecs_and_state_machine(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    counts: Counter[str] = Counter()
    n_frames = [0]
    codecs = [cls(user_id="fuzz") for cls in CODECS.values()]

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(
        steps=steps,
        dialect=st.integers(0, 2),
        mode=st.sampled_from(["push_to_talk", "toggle", "hands_free"]),
    )
    def run(steps: list[tuple[str, Any]], dialect: int, mode: str) -> None:
        codec = codecs[dialect]
        c = cv.Conversation.from_settings(CONFIGS[mode].turn)
        c.handle(cv.LinkUp(), 0.0)
        now = 0.0
        for kind, item in steps:
            now += 0.37
            if kind == "frame":
                tags, frame = item
                counts.update(tags)
                n_frames[0] += 1
                for event in parse_or_count(codec, frame) or []:
                    for inp in cv.server_inputs(event):
                        c.handle(inp, now)
            else:
                c.handle(item, now)
            check_invariants(c)

    run()
    report(request, capsys, "codec+state machine", counts, n_frames[0])


# ---------------------------------------------------------------- through the real daemon


def sentinel(tag: str) -> str:
    """A well-formed event that marks the end of a batch (and lands in `ctl status`)."""
    limits = [{"name": tag, "limit": 100, "remaining": 42, "reset_seconds": 60}]
    return json.dumps({"type": "rate_limits.updated", "rate_limits": limits})


async def assert_turn_works(h: Harness) -> None:
    """A spoken push-to-talk turn, answered and played, the daemon back at IDLE."""
    before = h.daemon.status()["turns"]
    commits = len(h.sim.client_events("input_audio_buffer.commit"))
    await say(h, realtime=True)  # paced like a person: the gate times speech by the clock
    await h.until(lambda: h.state() == "speaking", timeout=15)
    await h.until(lambda: h.state() == "idle", timeout=20)
    assert h.daemon.status()["turns"] == before + 1
    assert len(h.sim.client_events("input_audio_buffer.commit")) == commits + 1


@pytest.mark.parametrize(
    "harness", [{"dialect": "openai"}, {"dialect": "xstar"}], indirect=True, ids=["openai", "xstar"]
)
async def test_fuzzed_frames_through_the_link_into_the_daemon(
    harness: Harness, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hypothesis runs in a worker thread; each example's frames go over the simulator's real
    WebSocket into the daemon's Link on this loop. After every batch: the same session is up,
    exactly the frames a codec rejects were counted, the daemon is still handling events
    (the sentinel reached `ctl status`). At the end, a spoken turn is answered."""
    h, loop = harness, asyncio.get_running_loop()
    h.sim.reply = "Fine."
    link = h.daemon.link
    assert link is not None
    reference = codec_for(h.daemon.cfg.api.dialect, h.daemon.cfg.device.user_id)
    counts: Counter[str] = Counter()
    n_frames = [0]
    seq = itertools.count()

    async def one_batch(batch: list[Frame]) -> None:
        errors_before = link.protocol_errors
        expected = sum(parse_or_count(reference, f) is None for _, f in batch)
        tag = f"sentinel-{next(seq)}"
        await h.sim.inject(*(f for _, f in batch), sentinel(tag))
        await h.until(
            lambda: any(r["name"] == tag for r in h.daemon.status()["rate_limits"]), timeout=10
        )
        assert link.connected and link.reconnects == 0 and h.sim.connections == 1
        assert not h.task.done()
        assert link.protocol_errors - errors_before == expected

    @settings(
        max_examples=DAEMON_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(batch=st.lists(shaped, min_size=1, max_size=8))
    @example(batch=ONE_OF_EACH)  # every shape at least once, whatever the generator favours
    def run(batch: list[Frame]) -> None:
        for tags, _ in batch:
            counts.update(tags)
        n_frames[0] += len(batch)
        asyncio.run_coroutine_threadsafe(one_batch(batch), loop).result(60)

    await asyncio.to_thread(run)
    name = f"real Link into the daemon ({h.daemon.cfg.api.dialect})"
    report(request, capsys, name, counts, n_frames[0])
    status = h.daemon.status()
    assert status["protocol_errors"] == link.protocol_errors > 0
    assert status["rate_limits"][0]["remaining"] == 42.0
    await assert_turn_works(h)
    assert link.reconnects == 0 and h.sim.connections == 1


# ---------------------------------------------------------------- the issue's frames, one by one

ISSUE_FRAMES = {
    "object as code": '{"type":"error","error":{"code":{"x":1},"message":"boom"}}',
    "50,000 nested [": "[" * 50000,
}


@pytest.mark.parametrize("frame", ISSUE_FRAMES.values(), ids=ISSUE_FRAMES.keys())
async def test_issue_frames_leave_the_daemon_answering(harness: Harness, frame: str) -> None:
    """Issue 18: each of these ended the link task (TypeError: unhashable in service.py,
    RecursionError out of the codec); the daemon then sat OFFLINE with the watchdog petted."""
    h = harness
    h.sim.reply = "Fine."
    link = h.daemon.link
    assert link is not None
    await h.sim.inject(frame)
    await asyncio.sleep(0.5)
    await assert_turn_works(h)
    assert link.connected and h.sim.connections == 1


async def test_an_endless_transcript_stays_bounded(harness: Harness) -> None:
    """Huge strings, repeated: 8 MB of transcript deltas for one item keep at most 64 K
    characters in the daemon, and the session goes on."""
    h = harness
    delta = json.dumps(
        {"type": "response.output_audio_transcript.delta", "item_id": "it", "delta": "w" * 16384}
    )
    for _ in range(8):
        await h.sim.inject(*[delta] * 64)
    await h.sim.inject(sentinel("after-transcript"))
    await h.until(lambda: bool(h.daemon.status()["rate_limits"]), timeout=10)
    assert len(h.daemon._transcripts["it"]) == 65536
    assert h.daemon.link is not None and h.daemon.link.connected
