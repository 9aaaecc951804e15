"""The pure conversation state machine: every transition and the races (issue 6)."""

from __future__ import annotations

from typing import Any

import pytest

from agentd import conversation as cv
from agentd.audio.frame import AudioFrame
from agentd.config import TurnSettings
from agentd.conversation import State as S
from agentd.realtime import client_events as ce

A = cv


def speech(ms: int) -> cv.MicAudio:
    """``ms`` of the voice gate's 16 kHz audio."""
    return A.MicAudio(AudioFrame(b"\x01\x00" * 16 * ms, 16000))


#: a finished turn handed to the server: commit, drop the held copy, ask for the answer
COMMIT = [A.Send(ce.Commit()), A.DiscardBuffered(), A.Send(ce.CreateResponse())]


def machine(mode: str = "push_to_talk", state: S = S.IDLE, **kw: Any) -> cv.Conversation:
    c = cv.Conversation(mode=mode, detection=kw.pop("detection", "local"))
    c.connected = kw.pop("connected", True)
    c.ever_connected = True
    c.state = state
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def speaking(mode: str = "push_to_talk") -> cv.Conversation:
    return machine(mode, S.SPEAKING, response_active=True, item_id="item_9", playing=True)


# (name, machine factory, event, expected actions, expected state)
TABLE: list[tuple[str, Any, Any, list[Any], S]] = [
    (
        "ptt press starts listening",
        lambda: machine(),
        A.Press(),
        [A.StartStreaming(press=True), A.Cue("listen_start")],
        S.LISTENING,
    ),
    (
        "ptt release commits",
        lambda: machine(state=S.LISTENING, sent_ms=800),
        A.Release(),
        [A.StopStreaming(), A.Cue("listen_end"), *COMMIT],
        S.THINKING,
    ),
    (
        "ptt release < 100 ms drops the turn",
        lambda: machine(state=S.LISTENING, sent_ms=60),
        A.Release(),
        [A.StopStreaming(), A.Send(ce.Clear()), A.Cue("short")],
        S.IDLE,
    ),
    (
        "ptt release with nothing sent",
        lambda: machine(state=S.LISTENING, sent_ms=0),
        A.Release(),
        [A.StopStreaming(), A.Cue("short")],
        S.IDLE,
    ),
    (
        "ptt press while listening ignored",
        lambda: machine(state=S.LISTENING),
        A.Press(),
        [],
        S.LISTENING,
    ),
    (
        "press while thinking cancels",
        lambda: machine(state=S.THINKING, response_active=True),
        A.Press(),
        [A.Send(ce.Cancel()), A.StartStreaming(press=True), A.Cue("listen_start")],
        S.LISTENING,
    ),
    (
        "press while speaking interrupts",
        speaking,
        A.Press(),
        [
            A.FlushPlayback(),
            A.Send(ce.Cancel()),
            A.Truncate("item_9"),
            A.StartStreaming(press=True),
            A.Cue("listen_start"),
        ],
        S.LISTENING,
    ),
    (
        "toggle click starts",
        lambda: machine("toggle"),
        A.Press(),
        [A.StartStreaming(), A.Cue("listen_start")],
        S.LISTENING,
    ),
    (
        "toggle second click ends",
        lambda: machine("toggle", S.LISTENING, sent_ms=500),
        A.Press(),
        [A.StopStreaming(), A.Cue("listen_end"), *COMMIT],
        S.THINKING,
    ),
    (
        "toggle release ignored",
        lambda: machine("toggle", S.LISTENING, sent_ms=500),
        A.Release(),
        [],
        S.LISTENING,
    ),
    (
        "toggle endpoint ends turn",
        lambda: machine("toggle", S.LISTENING, sent_ms=900),
        A.SpeechEnd(),
        [A.StopStreaming(), A.Cue("listen_end"), *COMMIT],
        S.THINKING,
    ),
    (
        "server detection ignores local endpoint",
        lambda: machine("toggle", S.LISTENING, detection="server", sent_ms=900),
        A.SpeechEnd(),
        [],
        S.LISTENING,
    ),
    (
        "server VAD end: no client commit",
        lambda: machine("hands_free", S.LISTENING, detection="server", sent_ms=900),
        A.SpeechEnd(server=True),
        [A.StopStreaming(), A.Cue("listen_end")],
        S.THINKING,
    ),
    (
        "ptt ignores endpoint",
        lambda: machine(state=S.LISTENING, sent_ms=900),
        A.SpeechEnd(),
        [],
        S.LISTENING,
    ),
    (
        "hands-free speech starts a turn",
        lambda: machine("hands_free"),
        A.SpeechStart(),
        [A.StartStreaming(), A.Cue("listen_start")],
        S.LISTENING,
    ),
    (
        "toggle speech without follow-up ignored",
        lambda: machine("toggle"),
        A.SpeechStart(),
        [],
        S.IDLE,
    ),
    (
        "toggle follow-up speech continues",
        lambda: machine("toggle", follow_up_until=1e9),
        A.SpeechStart(),
        [A.StartStreaming(), A.Cue("listen_start")],
        S.LISTENING,
    ),
    ("ptt ignores speech start", lambda: machine(), A.SpeechStart(), [], S.IDLE),
    (
        "voice barge-in interrupts",
        lambda: speaking("hands_free"),
        A.BargeIn(),
        [
            A.FlushPlayback(),
            A.Send(ce.Cancel()),
            A.Truncate("item_9"),
            A.StartStreaming(),
            A.Cue("listen_start"),
        ],
        S.LISTENING,
    ),
    ("barge-in while idle ignored", lambda: machine("hands_free"), A.BargeIn(), [], S.IDLE),
    (
        "ctl interrupt while speaking",
        speaking,
        A.Interrupt(),
        [A.FlushPlayback(), A.Send(ce.Cancel()), A.Truncate("item_9")],
        S.IDLE,
    ),
    (
        "ctl talk starts and ends",
        lambda: machine("push_to_talk", S.LISTENING, sent_ms=300),
        A.Talk(),
        [A.StopStreaming(), A.Cue("listen_end"), *COMMIT],
        S.THINKING,
    ),
    (
        "first audio → speaking",
        lambda: machine(state=S.THINKING, response_active=True),
        A.AssistantAudio("item_1", b"\x01\x00"),
        [A.Play("item_1", b"\x01\x00")],
        S.SPEAKING,
    ),
    (
        "stale audio after cancel ignored",
        lambda: machine(state=S.LISTENING, response_active=False),
        A.AssistantAudio("item_old"),
        [],
        S.LISTENING,
    ),
    (
        "response done while speaking keeps speaking",
        speaking,
        A.ResponseFinished("completed"),
        [],
        S.SPEAKING,
    ),
    (
        "playback finished → idle",
        lambda: machine(state=S.SPEAKING, playing=True),
        A.PlaybackFinished(),
        [],
        S.IDLE,
    ),
    (
        "speaker stops taking audio mid-answer → error, server told what was heard",
        speaking,
        A.PlaybackStalled(),
        [A.FlushPlayback(), A.Send(ce.Cancel()), A.Truncate("item_9"), A.Cue("error")],
        S.ERROR,
    ),
    (
        "speaker ran dry before response done (slow audio) → idle at response done",
        lambda: machine(state=S.SPEAKING, playing=False, response_active=True),
        A.ResponseFinished("completed"),
        [],
        S.IDLE,
    ),
    (
        "response done without audio → idle",
        lambda: machine(state=S.THINKING, response_active=True),
        A.ResponseFinished("completed"),
        [],
        S.IDLE,
    ),
    (
        "response failed → error",
        lambda: machine(state=S.THINKING, response_active=True),
        A.ResponseFinished("failed", "server_error"),
        [A.Cue("error")],
        S.ERROR,
    ),
    (
        "server error mid-turn → error",
        lambda: machine(state=S.THINKING),
        A.ServerFault("server_error", "boom"),
        [A.Cue("error")],
        S.ERROR,
    ),
    (
        "server error while listening stops",
        lambda: machine(state=S.LISTENING),
        A.ServerFault(None, "bad"),
        [A.StopStreaming(), A.Cue("error")],
        S.ERROR,
    ),
    (
        "active-response race is harmless",
        lambda: machine(state=S.THINKING),
        A.ServerFault("conversation_already_has_active_response", "x"),
        [],
        S.THINKING,
    ),
    (
        "commit empty → short cue",
        lambda: machine(state=S.THINKING),
        A.ServerFault("input_audio_buffer_commit_empty", "x"),
        [A.Cue("short")],
        S.IDLE,
    ),
    (
        "disconnect mid-answer → offline",
        speaking,
        A.LinkDown("lost"),
        [A.FlushPlayback(), A.Cue("offline")],
        S.OFFLINE,
    ),
    (
        "disconnect while idle → offline, its cue once",
        lambda: machine(),
        A.LinkDown("lost"),
        [A.Cue("offline")],
        S.OFFLINE,
    ),
    (
        "still unreachable: no second cue",
        lambda: machine(state=S.OFFLINE, connected=False, problem="offline"),
        A.LinkDown("refused", "refused"),
        [],
        S.OFFLINE,
    ),
    (
        "key rejected → its own cue",
        lambda: machine(state=S.OFFLINE, connected=False, problem="offline"),
        A.LinkDown("API key rejected", "auth"),
        [A.Cue("auth")],
        S.OFFLINE,
    ),
    (
        "HTTP 429 at the handshake → the quota cue",
        lambda: machine(),
        A.LinkDown("rate limited", "rate_limited"),
        [A.Cue("quota")],
        S.OFFLINE,
    ),
    (
        "quota error event mid-turn → quota cue, not the plain error",
        lambda: machine(state=S.THINKING),
        A.ServerFault("insufficient_quota", "out of credit", "insufficient_quota"),
        [A.Cue("quota")],
        S.ERROR,
    ),
    (
        "rate_limit_error mid-turn → quota cue",
        lambda: machine(state=S.THINKING),
        A.ServerFault("rate_limit_exceeded", "slow down", "rate_limit_error"),
        [A.Cue("quota")],
        S.ERROR,
    ),
    (
        "quota error while idle → quota cue once",
        lambda: machine(),
        A.ServerFault(None, "slow down", "rate_limit_error"),
        [A.Cue("quota")],
        S.IDLE,
    ),
    (
        "an error code that is not a string is an error, not a crash",
        lambda: machine(state=S.THINKING),
        A.ServerFault({"x": 1}, "boom"),  # type: ignore[arg-type]
        [A.Cue("error")],
        S.ERROR,
    ),
    (
        "response incomplete → error",
        lambda: machine(state=S.THINKING, response_active=True),
        A.ResponseFinished("incomplete", "max_output_tokens"),
        [A.Cue("error")],
        S.ERROR,
    ),
    (
        "response incomplete while its audio plays → shown when it has played",
        speaking,
        A.ResponseFinished("incomplete", "content_filter"),
        [],
        S.SPEAKING,
    ),
    (
        "response failed for quota → quota cue",
        lambda: machine(state=S.THINKING, response_active=True),
        A.ResponseFinished("failed", "insufficient_quota"),
        [A.Cue("quota")],
        S.ERROR,
    ),
    (
        "planned renewal while idle: no offline, no cue",
        lambda: machine(),
        A.LinkDown(None, planned=True),
        [],
        S.IDLE,
    ),
    ("renewal due while idle → renew", lambda: machine(), A.RenewDue(), [A.Renew()], S.IDLE),
    (
        "renewal due mid-turn waits",
        lambda: machine(state=S.LISTENING, sent_ms=300),
        A.RenewDue(),
        [],
        S.LISTENING,
    ),
    ("renewal due while speaking waits", speaking, A.RenewDue(), [], S.SPEAKING),
    (
        "new server settings while offline → reconnect now",
        lambda: machine(state=S.OFFLINE, connected=False),
        A.RenewDue(),
        [A.Reconnect()],
        S.OFFLINE,
    ),
    (
        "reload while idle applies at once",
        lambda: machine(),
        A.Reconfigure(TurnSettings(mode="toggle")),
        [A.ApplySettings()],
        S.IDLE,
    ),
    (
        "reload during a push-to-talk hold waits for the turn's end",
        lambda: machine(state=S.LISTENING, sent_ms=300),
        A.Reconfigure(TurnSettings(mode="toggle")),
        [],
        S.LISTENING,
    ),
    (
        "disconnect while listening keeps listening",
        lambda: machine(state=S.LISTENING),
        A.LinkDown("x"),
        [],
        S.LISTENING,
    ),
    (
        "link up again → idle, the recent turns put back",
        lambda: machine(state=S.OFFLINE, connected=False),
        A.LinkUp(),
        [A.RestoreContext()],
        S.IDLE,
    ),
    (
        "first link up plays connected",
        lambda: machine(state=S.OFFLINE, connected=False, ever_connected=False),
        A.LinkUp(),
        [A.Cue("connected")],
        S.IDLE,
    ),
    (
        "double press mutes",
        lambda: machine(),
        A.DoublePress(),
        [A.Listen(False), A.Cue("muted")],
        S.MUTED,
    ),
    (
        "double press unmutes",
        lambda: machine(state=S.MUTED),
        A.DoublePress(),
        [A.Listen(True), A.Cue("muted")],
        S.IDLE,
    ),
    (
        "ctl mute while listening",
        lambda: machine(state=S.LISTENING, sent_ms=200),
        A.Mute(),
        [A.StopStreaming(), A.Send(ce.Clear()), A.Listen(False), A.Cue("muted")],
        S.MUTED,
    ),
    ("press while muted ignored", lambda: machine(state=S.MUTED), A.Press(), [], S.MUTED),
    (
        "end of the playing item's audio: its last chunk",
        speaking,
        A.AssistantAudioDone("item_9"),
        [A.Play("item_9", b"", last=True)],
        S.SPEAKING,
    ),
    ("end of another item's audio: nothing", speaking, A.AssistantAudioDone("old"), [], S.SPEAKING),
    (
        "audio of the answer while listening is not played",
        lambda: machine(state=S.LISTENING, response_active=True),
        A.AssistantAudio("item_1", b"\x01\x00"),
        [],
        S.LISTENING,
    ),
    (
        "server VAD over the answer, barge_in voice: interrupt and listen",
        lambda: machine(
            "hands_free",
            S.SPEAKING,
            response_active=True,
            item_id="item_9",
            playing=True,
            voice_barge_in=True,
        ),
        A.ServerSpeechStart(),
        [
            A.FlushPlayback(),
            A.Send(ce.Cancel()),
            A.Truncate("item_9"),
            A.StartStreaming(),
            A.Cue("listen_start"),
        ],
        S.LISTENING,
    ),
    (
        "server VAD over the answer, barge_in button",
        speaking,
        A.ServerSpeechStart(),
        [],
        S.SPEAKING,
    ),
    (
        "turn speech while connected: sent and held until the commit",
        lambda: machine(state=S.LISTENING),
        speech(20),
        [A.Uplink(speech(20).frame, send=True, hold=True)],
        S.LISTENING,
    ),
    (
        "turn speech with server VAD: sent, not held (the server commits)",
        lambda: machine("hands_free", S.LISTENING, detection="server"),
        speech(20),
        [A.Uplink(speech(20).frame, send=True, hold=False)],
        S.LISTENING,
    ),
    (
        "turn speech during an outage: held only",
        lambda: machine("hands_free", S.LISTENING, detection="server", outage_since=99.0),
        speech(20),
        [A.Uplink(speech(20).frame, send=False, hold=True)],
        S.LISTENING,
    ),
    ("speech outside a turn goes nowhere", machine, speech(20), [], S.IDLE),
    (
        "speaker hung mid-answer: cancel, truncate, error",
        speaking,
        A.PlaybackStalled(),
        [A.FlushPlayback(), A.Send(ce.Cancel()), A.Truncate("item_9"), A.Cue("error")],
        S.ERROR,
    ),
    ("speaker hung while idle: nothing to stop", machine, A.PlaybackStalled(), [], S.IDLE),
    ("5 s hold reconnects", lambda: machine(), A.LongHold(), [A.Reconnect()], S.IDLE),
    (
        "press while offline listens (held)",
        lambda: machine(state=S.OFFLINE, connected=False),
        A.Press(),
        [A.StartStreaming(press=True), A.Cue("listen_start")],
        S.LISTENING,
    ),
    # tools (issue 21): collected per response, run when it is done, one response.create
    (
        "a tool call during a response is collected, nothing run yet",
        lambda: machine(state=S.THINKING, response_active=True),
        A.ToolCall("c1", "get_time", "{}"),
        [],
        S.THINKING,
    ),
    (
        "response done with calls runs them; the LED shows thinking",
        lambda: machine(
            state=S.THINKING, response_active=True, calls={"c1": A.ToolCall("c1", "get_time", "{}")}
        ),
        A.ResponseFinished("completed"),
        [A.RunTools(1, (A.ToolCall("c1", "get_time", "{}"),))],
        S.THINKING,
    ),
    (
        "tool outputs go back, then one response.create",
        lambda: machine(state=S.THINKING, tool_batch=1),
        A.ToolsDone(1, (("c1", "12:00"), ("c2", "ok"))),
        [
            A.Send(ce.FunctionOutput("c1", "12:00")),
            A.Send(ce.FunctionOutput("c2", "ok")),
            A.Send(ce.CreateResponse()),
        ],
        S.THINKING,
    ),
    (
        "a tool that ends the conversation: its output goes back, no answer is asked for",
        lambda: machine(state=S.THINKING, tool_batch=1),
        A.ToolsDone(1, (("c1", '{"ended": true}'),), end=True),
        [A.Send(ce.FunctionOutput("c1", '{"ended": true}'))],
        S.IDLE,
    ),
    (
        "outputs of a cancelled batch are dropped",
        lambda: machine(state=S.IDLE),
        A.ToolsDone(1, (("c1", "late"),)),
        [],
        S.IDLE,
    ),
    (
        "interrupt during a tool cancels it",
        lambda: machine(state=S.THINKING, tool_batch=3),
        A.Interrupt(),
        [A.FlushPlayback(), A.CancelTools(3)],
        S.IDLE,
    ),
    (
        "press during a tool cancels it and listens",
        lambda: machine(state=S.THINKING, tool_batch=3),
        A.Press(),
        [A.CancelTools(3), A.StartStreaming(press=True), A.Cue("listen_start")],
        S.LISTENING,
    ),
    (
        "mute during a tool cancels it",
        lambda: machine(state=S.THINKING, tool_batch=2),
        A.Mute(True),
        [A.CancelTools(2), A.Listen(False), A.Cue("muted")],
        S.MUTED,
    ),
    (
        "an MCP approval request is kept for the end of the response",
        lambda: machine(state=S.THINKING, response_active=True),
        A.ApprovalAsked("r1", False),
        [],
        S.THINKING,
    ),
    (
        "approvals answered by the policy, then one response.create",
        lambda: machine(state=S.THINKING, response_active=True, approvals={"r1": True}),
        A.ResponseFinished("completed"),
        [A.Send(ce.McpApproval("r1", True)), A.Send(ce.CreateResponse())],
        S.THINKING,
    ),
    # announcements (ctl say / ask)
    (
        "say when idle (OpenAI): an out-of-band response speaks it",
        lambda: machine(),
        A.Announce("battery low"),
        [
            A.Send(
                ce.CreateResponse(
                    out_of_band=True, instructions=cv.VERBATIM.format(text="battery low")
                )
            )
        ],
        S.THINKING,
    ),
    (
        "say when idle (xStar): a tts_text message",
        lambda: machine(tts_text=True),
        A.Announce("battery low"),
        [A.Send(ce.UserText("battery low", "tts_text")), A.Send(ce.CreateResponse())],
        S.THINKING,
    ),
    (
        "ask when idle: a user text turn",
        lambda: machine(),
        A.Announce("what time is it", ask=True),
        [A.Send(ce.UserText("what time is it")), A.Send(ce.CreateResponse())],
        S.THINKING,
    ),
    ("say while speaking waits for the end", speaking, A.Announce("hi"), [], S.SPEAKING),
    (
        "say --interrupt cuts the answer off and speaks now",
        speaking,
        A.Announce("hi", interrupt=True),
        [
            A.FlushPlayback(),
            A.Send(ce.Cancel()),
            A.Truncate("item_9"),
            A.Send(ce.CreateResponse(out_of_band=True, instructions=cv.VERBATIM.format(text="hi"))),
        ],
        S.THINKING,
    ),
    (
        "wake word starts a turn replayed from the word's end",
        lambda: machine("wake_word"),
        A.WakeWord("okay_nabu", 98.7),
        [A.StartStreaming(), A.Cue("listen_start"), A.Rewind(98.7)],
        S.LISTENING,
    ),
    (
        "wake word over the answer interrupts (aec: no echo gate)",
        lambda: machine(
            "wake_word",
            S.SPEAKING,
            response_active=True,
            item_id="item_9",
            playing=True,
            echo_gated=False,
        ),
        A.WakeWord("okay_nabu", 99.5, echo=True),
        [
            A.FlushPlayback(),
            A.Send(ce.Cancel()),
            A.Truncate("item_9"),
            A.StartStreaming(),
            A.Cue("listen_start"),
            A.Rewind(99.5),
        ],
        S.LISTENING,
    ),
    (
        "half-duplex: a wake word while the answer plays is echo",
        lambda: speaking("wake_word"),
        A.WakeWord("okay_nabu", 99.5, echo=True),
        [],
        S.SPEAKING,
    ),
    (
        "half-duplex: a wake word after playback (tail over) interrupts",
        lambda: speaking("wake_word"),
        A.WakeWord("okay_nabu", 99.5, echo=False),
        [
            A.FlushPlayback(),
            A.Send(ce.Cancel()),
            A.Truncate("item_9"),
            A.StartStreaming(),
            A.Cue("listen_start"),
            A.Rewind(99.5),
        ],
        S.LISTENING,
    ),
    (
        "muted: the wake word does nothing",
        lambda: machine("wake_word", S.MUTED),
        A.WakeWord("okay_nabu", 99.0),
        [],
        S.MUTED,
    ),
    (
        "the wake word in another mode does nothing",
        machine,
        A.WakeWord("okay_nabu", 99.0),
        [],
        S.IDLE,
    ),
    (
        "wake_word: speech without the word starts nothing",
        lambda: machine("wake_word"),
        A.SpeechStart(),
        [],
        S.IDLE,
    ),
    (
        "wake_word: speech in the follow-up window starts a turn",
        lambda: machine("wake_word", follow_up_until=101.0),
        A.SpeechStart(),
        [A.StartStreaming(), A.Cue("listen_start")],
        S.LISTENING,
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "event", "actions", "state"), TABLE, ids=[t[0] for t in TABLE]
)
def test_transition(name: str, make: Any, event: Any, actions: list[Any], state: S) -> None:
    c = make()
    assert c.handle(event, now=100.0) == actions
    assert c.state is state


def test_every_state_and_input_is_covered() -> None:
    inputs = {type(t[2]) for t in TABLE}
    missing = {cls for cls in cv.Input.__args__ if cls not in inputs} - {
        cv.MicAudio,
        cv.Tick,  # type: ignore[attr-defined]
        cv.ResponseStarted,
        cv.AssistantItem,
    }
    assert not missing
    states = {t[4] for t in TABLE}
    assert states == set(S)


def test_max_turn_ends_the_turn_and_error_clears() -> None:
    c = machine("toggle")
    c.handle(A.Press(), 0.0)
    c.handle(speech(3000), 1.0)
    assert c.handle(A.Tick(), 29.0) == []
    assert A.Send(ce.Commit()) in c.handle(A.Tick(), 30.0)
    c.handle(A.ServerFault("server_error", "x"), 31.0)
    assert c.state is S.ERROR
    c.handle(A.Tick(), 33.0)
    assert c.state is S.ERROR
    c.handle(A.Tick(), 34.1)
    assert c.state is S.IDLE


def test_speech_during_short_outage_is_kept_and_sent() -> None:
    c = machine()
    c.handle(A.Press(), 0.0)
    c.handle(speech(400), 0.5)
    assert c.handle(A.LinkDown("lost"), 0.6) == []
    c.handle(speech(600), 1.0)
    assert c.handle(A.Release(), 1.5) == [A.StopStreaming(), A.Cue("listen_end")]
    assert c.state is S.THINKING and c.turn_waiting
    assert c.handle(A.LinkUp(), 3.0) == [A.RestoreContext(), A.ReplayBuffered(), *COMMIT]
    assert c.state is S.THINKING and c.counters.lost_turns == 0


def test_speech_during_long_outage_is_an_error_never_silent() -> None:
    c = machine()
    c.handle(A.Press(), 0.0)
    c.handle(speech(400), 0.5)
    c.handle(A.LinkDown("lost"), 0.6)
    c.handle(A.Release(), 1.5)
    acts = c.handle(A.Tick(), 0.6 + cv.OUTAGE_GRACE_S)
    assert A.DiscardBuffered("the connection did not come back") in acts and A.Cue("error") in acts
    assert c.state is S.ERROR and c.counters.lost_turns == 1
    assert "did not come back" in (c.last_error or "")


def test_toggle_conversation_continues_until_idle_timeout() -> None:
    c = machine("toggle")
    c.idle_timeout_s = 20
    c.handle(A.Press(), 0.0)
    c.handle(speech(500), 1.0)
    c.handle(A.SpeechEnd(), 2.0)
    c.handle(A.ResponseStarted("r"), 2.1)
    c.handle(A.AssistantItem("i"), 2.1)
    c.handle(A.AssistantAudio("i"), 2.2)
    c.handle(A.ResponseFinished("completed"), 3.0)
    c.handle(A.PlaybackFinished(), 4.0)
    assert c.state is S.IDLE
    assert c.handle(A.SpeechStart(), 10.0)[0] == A.StartStreaming()  # hands-free follow-up
    c.handle(speech(500), 11.0)
    c.handle(A.SpeechEnd(), 12.0)
    c.handle(A.ResponseFinished("completed"), 13.0)
    assert c.state is S.IDLE
    assert c.handle(A.SpeechStart(), 13.0 + 20.5) == []  # timed out: back to clicks


def test_interrupt_counts_and_truncates_only_once() -> None:
    c = speaking()
    c.handle(A.Press(), 1.0)
    assert c.counters.interrupts == 1
    c.handle(A.Release(), 1.05)  # < 100 ms: dropped
    assert c.state is S.IDLE and c.counters.dropped_turns == 1
    assert c.handle(A.AssistantAudio("item_9"), 1.1) == [] and c.state is S.IDLE


def test_reload_during_a_hold_keeps_it_and_applies_from_the_next_turn() -> None:
    c = machine()
    c.handle(A.Press(), 0.0)
    c.handle(speech(600), 0.6)
    assert c.handle(A.Reconfigure(TurnSettings(mode="toggle")), 0.7) == []
    assert c.mode == "push_to_talk"  # the hold is a push-to-talk hold until released
    acts = c.handle(A.Release(), 1.0)
    assert A.Send(ce.Commit()) in acts and A.ApplySettings() not in acts  # the answer is still due
    assert c.handle(A.ResponseFinished("completed"), 2.0) == [A.ApplySettings()]
    assert c.state is S.IDLE and c.mode == "toggle"
    c.handle(A.Press(), 3.0)
    assert c.handle(A.Release(), 3.2) == []  # toggle now: release does not end the turn


def test_turn_during_a_planned_renewal_is_committed_on_the_new_session() -> None:
    c = machine()
    assert c.handle(A.RenewDue(), 0.0) == [A.Renew()] and not c.connected
    assert c.state is S.IDLE  # no OFFLINE flash for a planned renewal
    c.handle(A.Press(), 0.1)
    c.handle(speech(800), 0.9)
    assert c.handle(A.LinkDown(None, planned=True), 0.95) == []  # the old session ends
    assert c.handle(A.Release(), 1.0) == [A.StopStreaming(), A.Cue("listen_end")]
    assert c.state is S.THINKING and c.turn_waiting
    assert c.handle(A.LinkUp(), 1.5) == [A.RestoreContext(), A.ReplayBuffered(), *COMMIT]
    assert c.counters.lost_turns == 0 and c.problem is None


def test_press_while_offline_is_held_and_sent_when_the_link_is_back() -> None:
    c = machine(state=S.OFFLINE, connected=False)
    c.handle(A.Press(), 0.0)
    c.handle(speech(500), 0.5)
    c.handle(A.Release(), 1.0)
    assert c.state is S.THINKING and c.turn_waiting
    assert c.handle(A.LinkUp(), 2.0) == [A.RestoreContext(), A.ReplayBuffered(), *COMMIT]


def test_press_while_offline_gives_up_when_the_link_stays_away() -> None:
    c = machine(state=S.OFFLINE, connected=False)
    c.handle(A.Press(), 0.0)
    c.handle(speech(500), 0.5)
    c.handle(A.Release(), 1.0)
    acts = c.handle(A.Tick(), cv.OUTAGE_GRACE_S)
    assert A.Cue("error") in acts and c.state is S.ERROR and c.counters.lost_turns == 1


def test_thinking_deadline_gives_the_error_cue_and_returns_to_idle() -> None:
    c = machine()
    c.response_timeout_s = 15.0
    c.handle(A.Press(), 0.0)
    c.handle(speech(500), 0.5)
    c.handle(A.Release(), 1.0)
    assert c.handle(A.Tick(), 15.9) == []
    assert c.handle(A.Tick(), 16.0) == [A.Send(ce.Cancel()), A.Cue("error")]
    assert c.state is S.ERROR and c.counters.no_answer == 1
    assert "no answer" in (c.last_error or "")
    c.handle(A.Tick(), 16.0 + cv.ERROR_SHOW_S)
    assert c.state is S.IDLE


def test_a_response_that_starts_moves_the_deadline() -> None:
    c = machine(state=S.THINKING, thinking_since=0.0)
    c.response_timeout_s = 15.0
    c.handle(A.ResponseStarted("r"), 10.0)
    assert c.handle(A.Tick(), 20.0) == [] and c.state is S.THINKING
    assert A.Cue("error") in c.handle(A.Tick(), 25.0)


def test_incomplete_answer_is_shown_after_the_part_that_came_played() -> None:
    c = speaking()
    assert c.handle(A.ResponseFinished("incomplete", "content_filter"), 1.0) == []
    assert c.handle(A.PlaybackFinished(), 2.0) == [A.Cue("error")]
    assert c.state is S.ERROR and c.counters.failed_responses == 1
    assert c.last_error == "response incomplete (content_filter)"


def test_quota_problem_lasts_until_an_answer_completes() -> None:
    c = machine(state=S.THINKING)
    c.handle(A.ServerFault("insufficient_quota", "out of credit", "insufficient_quota"), 0.0)
    c.handle(A.Tick(), cv.ERROR_SHOW_S)
    assert c.state is S.IDLE and c.shown_problem == "quota"
    c.handle(A.Press(), 10.0)
    assert c.shown_problem is None  # a turn shows its own state
    c.handle(speech(500), 10.5)
    c.handle(A.Release(), 11.0)
    c.handle(A.ResponseStarted("r"), 11.2)
    c.handle(A.ResponseFinished("completed"), 12.0)
    assert c.state is S.IDLE and c.problem is None


def test_a_renewal_wanted_mid_turn_happens_at_the_first_idle_tick_with_its_reason() -> None:
    """Issue 20: the reason a renewal waits for lived in the daemon (`_renew_reason`); the
    core now remembers it and renews by itself once the turn is over."""
    c = machine(state=S.SPEAKING, response_active=True, item_id="i", playing=True)
    assert c.handle(A.RenewDue("for the reloaded server settings"), 1.0) == []
    assert c.handle(A.Tick(), 1.1) == []  # still answering
    c.handle(A.ResponseFinished("completed"), 1.2)
    c.handle(A.PlaybackFinished(), 1.3)
    assert c.state is S.IDLE
    assert c.handle(A.Tick(), 1.4) == [A.Renew("for the reloaded server settings")]
    assert c.handle(A.Tick(), 1.5) == []  # once


def test_a_renewal_wanted_while_offline_is_one_reconnect() -> None:
    c = machine(state=S.OFFLINE, connected=False)
    assert c.handle(A.RenewDue("for the reloaded server settings"), 1.0) == [A.Reconnect()]
    assert c.handle(A.Tick(), 1.1) == []  # not a reconnect every tick


def test_wake_word_follow_up_window_opens_after_the_answer_and_closes() -> None:
    """turn.follow_up_s: after an answer plays out the user may speak again without the
    word for that long; 0 keeps it off."""
    for follow_up, at, starts in ((8.0, 107.0, True), (8.0, 109.0, False), (0.0, 101.0, False)):
        c = machine("wake_word", S.SPEAKING, response_active=False, item_id="i", playing=True)
        c.follow_up_s = follow_up
        c.handle(A.PlaybackFinished(), 100.0)
        assert c.state is S.IDLE
        assert (A.Cue("listen_start") in c.handle(A.SpeechStart(), at)) is starts


def test_wake_word_without_speech_ends_the_turn_unsent() -> None:
    c = machine("wake_word")
    c.handle(A.WakeWord("okay_nabu", 99.9), 100.0)
    assert c.handle(A.Tick(), 100.0 + cv.WAKE_WAIT_S - 0.1) == []
    assert c.handle(A.Tick(), 100.0 + cv.WAKE_WAIT_S) == [A.StopStreaming(), A.Cue("short")]
    assert c.state is S.IDLE


def test_wake_word_turn_mode_comes_from_settings() -> None:
    c = cv.Conversation.from_settings(TurnSettings(mode="wake_word", follow_up_s=6.0))
    assert (c.mode, c.follow_up_s) == ("wake_word", 6.0)


def test_a_reload_changes_whether_a_wake_word_over_the_answer_is_echo() -> None:
    c = speaking("wake_word")
    c.handle(A.Reconfigure(TurnSettings(mode="wake_word"), echo_gated=False), 100.0)
    assert A.Rewind(99.5) in c.handle(A.WakeWord("okay_nabu", 99.5, echo=True), 100.0)
