"""The conversation state machine: who may talk when, and what to do about it.

Pure: :meth:`Conversation.handle` takes one input (button, control command, voice gate,
server or playback event, link up/down, a clock tick) and returns the actions the service
must carry out: every decision (what to send, what to play, what to hold for an outage) is
an action, so the service only carries them out. No I/O, no clock of its own, so every
transition and race is a table row in the tests.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import assert_never

from agentd.audio.frame import AudioFrame
from agentd.config import TurnSettings
from agentd.realtime import client_events as ce
from agentd.realtime import events as ev

log = logging.getLogger("agentd.conversation")

WAKE_WAIT_S = 5.0  # wake_word: no speech this long after the word ends the turn unsent
MIN_COMMIT_MS = 100  # servers reject a commit of less audio
OUTAGE_GRACE_S = 5.0  # a turn held during an outage is sent if the link is back this soon
ERROR_SHOW_S = 3.0  # how long ERROR stays on the LED before returning to IDLE
#: error codes that only mean a race (cancel after the end, a second response.create)
BENIGN_ERRORS = frozenset(
    {"conversation_already_has_active_response", "response_cancel_not_active", "item_not_found"}
)
#: error codes / types that mean "out of credit or too many requests": the quota problem
QUOTA_ERRORS = frozenset(
    {"insufficient_quota", "rate_limit_exceeded", "rate_limit_error", "rate_limited"}
)
#: link failure kinds (connection.LinkError.kind) that are a problem of their own
LINK_PROBLEMS = {"auth": "auth", "rate_limited": "quota"}
BUSY = frozenset({"listening", "thinking", "speaking"})
ANNOUNCEMENTS_MAX = 8  # `ctl say`/`ctl ask` texts waiting for an idle moment
#: an out-of-band answer (OpenAI) that speaks an announcement verbatim
VERBATIM = "Say exactly the following text, word for word, and nothing else:\n{text}"


class Problem:
    """What keeps the device from working, each with its own LED pattern, cue and STATUS=."""

    AUTH = "auth"  # the server rejected the API key
    QUOTA = "quota"  # out of quota or rate limited
    OFFLINE = "offline"  # network outage: the server cannot be reached


def is_quota(*codes: object) -> bool:
    return any(isinstance(c, str) and c in QUOTA_ERRORS for c in codes)


class State(StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    OFFLINE = "offline"
    ERROR = "error"
    MUTED = "muted"


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True, slots=True)
class Press:
    pass


@dataclass(frozen=True, slots=True)
class Release:
    pass


@dataclass(frozen=True, slots=True)
class DoublePress:
    pass


@dataclass(frozen=True, slots=True)
class LongHold:
    """Held for button.hold_ms: force a reconnect."""


@dataclass(frozen=True, slots=True)
class Talk:
    """`agentd ctl talk`: start a turn, or end the current one."""


@dataclass(frozen=True, slots=True)
class Interrupt:
    pass


@dataclass(frozen=True, slots=True)
class Mute:
    """``on``: True mutes, False unmutes (`ctl mute`/`unmute`, idempotent); None toggles
    (the button's double press). ``switch``: from the latching mute switch, which wins: while
    it is on, nothing else unmutes."""

    on: bool | None = None
    switch: bool = False


@dataclass(frozen=True, slots=True)
class SpeechStart:
    pass


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """End of speech: from the local gate, or from the server's VAD (``server=True``)."""

    server: bool = False


@dataclass(frozen=True, slots=True)
class BargeIn:
    pass


@dataclass(frozen=True, slots=True)
class ServerSpeechStart:
    """The server's VAD heard the user: a barge-in when echo.barge_in is voice."""


@dataclass(frozen=True, slots=True)
class MicAudio:
    """Speech from the voice gate; the frame knows how long it is."""

    frame: AudioFrame


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str


@dataclass(frozen=True, slots=True)
class AssistantItem:
    item_id: str


@dataclass(frozen=True, slots=True)
class AssistantAudio:
    item_id: str
    pcm: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class AssistantAudioDone:
    item_id: str


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    status: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ServerFault:
    code: str | None
    message: str
    kind: str | None = None  # the error's type (invalid_request_error, rate_limit_error …)


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    pass


@dataclass(frozen=True, slots=True)
class PlaybackStalled:
    """The speaker hung or vanished mid-answer: the rest of it cannot be heard."""


@dataclass(frozen=True, slots=True)
class LinkUp:
    pass


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The session ended. ``kind`` is the link's failure kind (``auth``, ``rate_limited``,
    ``refused`` …); ``planned`` is a renewal the daemon asked for (not an outage)."""

    reason: str | None = None
    kind: str | None = None
    planned: bool = False


#: why a session is renewed when nothing else is said: it nears the server's cap
SESSION_CAP = "before the server's session cap (api.session_max_s)"


@dataclass(frozen=True, slots=True)
class RenewDue:
    """The session should be redone (near the server's cap, or new url/key/headers): at
    the next idle moment, remembered until then."""

    reason: str = SESSION_CAP


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """A reload: new turn settings, in force from the next turn; ``voice_barge_in``
    (echo.barge_in is voice; None keeps it) at once."""

    turn: TurnSettings
    voice_barge_in: bool | None = None
    echo_gated: bool | None = None  # echo.mode is half_duplex (None keeps it)


@dataclass(frozen=True, slots=True)
class Tick:
    pass


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call of the response in flight (the same call_id may come twice)."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ApprovalAsked:
    """A remote MCP server's approval request, with the configured answer."""

    request_id: str
    approve: bool


@dataclass(frozen=True, slots=True)
class ToolsDone:
    """The outputs of batch ``batch`` (call_id, output); ``end``: a tool ended the
    conversation (no answer is asked for)."""

    batch: int
    outputs: tuple[tuple[str, str], ...]
    end: bool = False


@dataclass(frozen=True, slots=True)
class Announce:
    """`ctl say` (``ask`` False: spoken verbatim) or `ctl ask` (a user text turn); at the
    next idle moment, or at once cutting off what is going on (``interrupt``)."""

    text: str
    ask: bool = False
    interrupt: bool = False


@dataclass(frozen=True, slots=True)
class WakeWord:
    """The wake word was heard; the turn's audio starts at ``word_end`` (capture clock).
    ``echo``: heard while the speaker may echo into the mic (half-duplex ignores it then)."""

    word: str
    word_end: float
    echo: bool = False


Input = (
    Press
    | Release
    | DoublePress
    | LongHold
    | Talk
    | Interrupt
    | Mute
    | SpeechStart
    | SpeechEnd
    | BargeIn
    | ServerSpeechStart
    | MicAudio
    | ResponseStarted
    | AssistantItem
    | AssistantAudio
    | AssistantAudioDone
    | ResponseFinished
    | ServerFault
    | PlaybackFinished
    | PlaybackStalled
    | LinkUp
    | LinkDown
    | RenewDue
    | Reconfigure
    | Tick
    | ToolCall
    | ApprovalAsked
    | ToolsDone
    | Announce
    | WakeWord
)

# ------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class StartStreaming:
    """A turn starts: a fresh uplink; ``press`` opens the voice gate (push_to_talk)."""

    press: bool = False


@dataclass(frozen=True, slots=True)
class StopStreaming:
    pass


@dataclass(frozen=True, slots=True)
class Send:
    """A client event for the server."""

    event: ce.ClientEvent


@dataclass(frozen=True, slots=True)
class Uplink:
    """Turn speech: convert ``frame`` to the API rate, then append it now (``send``) and/or
    keep it for a replay after an outage (``hold``)."""

    frame: AudioFrame
    send: bool
    hold: bool


@dataclass(frozen=True, slots=True)
class Play:
    """Assistant audio for the speaker; ``last`` ends the item (an empty ``pcm`` then)."""

    item_id: str
    pcm: bytes = field(repr=False)
    last: bool = False


@dataclass(frozen=True, slots=True)
class Truncate:
    """Truncate ``item_id`` to what was heard (the service asks playback how much)."""

    item_id: str


@dataclass(frozen=True, slots=True)
class Listen:
    """The microphone feeds the voice gate (``on``) or is ignored (muted)."""

    on: bool


@dataclass(frozen=True, slots=True)
class FlushPlayback:
    pass


@dataclass(frozen=True, slots=True)
class Cue:
    name: str  # listen_start | listen_end | short | error | connected


@dataclass(frozen=True, slots=True)
class Reconnect:
    pass


@dataclass(frozen=True, slots=True)
class Renew:
    """Close the session and open a new one now: a planned renewal, not an outage."""

    reason: str = SESSION_CAP


@dataclass(frozen=True, slots=True)
class ApplySettings:
    """The reloaded turn settings are in force: apply the service's side (voice gate,
    session.update)."""


@dataclass(frozen=True, slots=True)
class ReplayBuffered:
    """Send the audio held during an outage."""


@dataclass(frozen=True, slots=True)
class DiscardBuffered:
    """Forget the held audio; ``reason`` says why speech was lost (None: committed)."""

    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RunTools:
    """Run these calls (call_id, name, arguments) as batch ``batch``; answer ToolsDone."""

    batch: int
    calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True)
class CancelTools:
    """Stop batch ``batch`` now (kill its processes, drop its requests); no output is sent."""

    batch: int


@dataclass(frozen=True, slots=True)
class RestoreContext:
    """A new session after a renewal or reconnect: put the recent turns back into it."""


@dataclass(frozen=True, slots=True)
class Rewind:
    """Feed the voice gate again from the wake ring, from ``since`` (the word's end)."""

    since: float


Action = (
    StartStreaming
    | StopStreaming
    | Send
    | Uplink
    | Play
    | Truncate
    | Listen
    | FlushPlayback
    | Cue
    | Reconnect
    | Renew
    | ApplySettings
    | ReplayBuffered
    | DiscardBuffered
    | RunTools
    | CancelTools
    | RestoreContext
    | Rewind
)


@dataclass
class Counters:
    turns: int = 0
    interrupts: int = 0
    dropped_turns: int = 0
    lost_turns: int = 0
    failed_responses: int = 0  # response.done failed/incomplete
    no_answer: int = 0  # THINKING reached turn.response_timeout_s
    tool_calls: int = 0
    tools_cancelled: int = 0  # batches cut off by an interrupt, mute or outage


@dataclass
class Conversation:
    mode: str = "push_to_talk"
    detection: str = "local"
    max_turn_s: float = 30.0
    idle_timeout_s: float = 20.0
    response_timeout_s: float = 15.0
    state: State = State.OFFLINE
    connected: bool = False
    counters: Counters = field(default_factory=Counters)
    last_error: str | None = None
    problem: str | None = None  # a Problem while one lasts
    sent_ms: int = 0
    turn_started: float = 0.0
    thinking_since: float = 0.0  # last sign of progress towards an answer
    response_active: bool = False
    item_id: str | None = None
    playing: bool = False
    #: an answer cut short (message, quota?): shown once the part that came has played
    fault_after_playback: tuple[str, bool] | None = None
    follow_up_until: float = 0.0  # toggle: hands-free continuation deadline
    outage_since: float | None = None  # link missing while a turn's audio is held
    turn_waiting: bool = False  # a finished turn waits for the link to come back
    error_until: float = 0.0
    ever_connected: bool = False
    pending: TurnSettings | None = None  # reloaded turn settings, applied at the next rest
    voice_barge_in: bool = False  # echo.barge_in: voice (the server's VAD may interrupt too)
    renew_wanted: str | None = None  # why the session is to be renewed at the next idle moment
    switch_muted: bool = False  # the latching mute switch is on: only it can unmute
    tts_text: bool = False  # the dialect speaks `tts_text` messages verbatim (xStar)
    calls: dict[str, ToolCall] = field(default_factory=dict)  # of the response in flight
    approvals: dict[str, bool] = field(default_factory=dict)  # MCP approval requests
    tool_batch: int | None = None  # the batch of tools running now
    batches: int = 0
    announcements: deque[Announce] = field(default_factory=lambda: deque(maxlen=ANNOUNCEMENTS_MAX))

    follow_up_s: float = 0.0  # wake_word: listen again without the word after an answer
    echo_gated: bool = True  # echo.mode half_duplex: a wake word heard over the answer is echo

    @classmethod
    def from_settings(
        cls,
        turn: TurnSettings,
        voice_barge_in: bool = False,
        tts_text: bool = False,
        echo_gated: bool = True,
    ) -> Conversation:
        """``voice_barge_in``: echo.barge_in is voice (the server's VAD may interrupt too);
        ``tts_text``: the dialect speaks announcements verbatim as `tts_text` (xStar);
        ``echo_gated``: echo.mode is half_duplex (no wake word while the answer plays)."""
        c = cls(voice_barge_in=voice_barge_in, tts_text=tts_text, echo_gated=echo_gated)
        c._apply(turn)
        return c

    def _apply(self, turn: TurnSettings) -> None:
        self.mode, self.detection = turn.mode, turn.detection
        self.max_turn_s, self.idle_timeout_s = turn.max_turn_s, turn.idle_timeout_s
        self.response_timeout_s = turn.response_timeout_s
        self.follow_up_s = turn.follow_up_s

    @property
    def streaming(self) -> bool:
        return self.state is State.LISTENING

    @property
    def busy(self) -> bool:
        """A turn is in flight: settings and renewals wait until it is over."""
        return self.state.value in BUSY or self.turn_waiting

    @property
    def server_commits(self) -> bool:
        return self.mode != "push_to_talk" and self.detection == "server"

    @property
    def shown_problem(self) -> str | None:
        """The problem the LED shows instead of the plain resting pattern (a turn in flight
        shows its own state)."""
        if self.state in (State.IDLE, State.OFFLINE) and self.problem != Problem.OFFLINE:
            return self.problem
        return None

    # -------------------------------------------------------------- dispatch

    def handle(self, event: Input, now: float) -> list[Action]:
        actions: list[Action]
        match event:
            case Press():
                actions = self._on_press(now)
            case Release():
                actions = self._on_release(now)
            case DoublePress():
                actions = [] if self.switch_muted else self._on_mute(None, now)
            case Mute():
                if event.switch:
                    self.switch_muted = bool(event.on)
                elif self.switch_muted and event.on is not True:
                    return []  # the switch wins over ctl unmute and the double press
                actions = self._on_mute(event.on, now)
            case LongHold():
                actions = self._on_long_hold(now)
            case Talk():
                actions = self._on_talk(now)
            case Interrupt():
                actions = self._on_interrupt(now)
            case SpeechStart():
                actions = self._on_speech_start(now)
            case SpeechEnd():
                actions = self._on_speech_end(event, now)
            case BargeIn():
                actions = self._on_barge_in(now)
            case ServerSpeechStart():
                actions = self._on_barge_in(now) if self.voice_barge_in else []
            case MicAudio():
                actions = self._on_mic_audio(event)
            case ResponseStarted():
                actions = self._on_response_started(now)
            case AssistantItem():
                actions = self._on_assistant_item(event, now)
            case AssistantAudio():
                actions = self._on_assistant_audio(event)
            case AssistantAudioDone():
                actions = (
                    [Play(event.item_id, b"", last=True)] if event.item_id == self.item_id else []
                )
            case ResponseFinished():
                actions = self._on_response_finished(event, now)
            case ServerFault():
                actions = self._on_server_fault(event, now)
            case PlaybackFinished():
                actions = self._on_playback_finished(now)
            case PlaybackStalled():
                actions = self._on_playback_stalled(now)
            case LinkUp():
                actions = self._on_link_up(now)
            case LinkDown():
                actions = self._on_link_down(event, now)
            case RenewDue():
                self.renew_wanted = event.reason
                actions = self._renew_when_idle()
            case Reconfigure():
                self.pending = event.turn
                if event.voice_barge_in is not None:
                    self.voice_barge_in = event.voice_barge_in
                if event.echo_gated is not None:
                    self.echo_gated = event.echo_gated
                actions = []
            case Tick():
                actions = self._on_tick(now)
            case ToolCall():
                actions = self._on_tool_call(event)
            case ApprovalAsked():
                if self.response_active:
                    self.approvals[event.request_id] = event.approve
                actions = []
            case ToolsDone():
                actions = self._on_tools_done(event, now)
            case Announce():
                actions = self._on_announce(event, now)
            case WakeWord():
                actions = self._on_wake(event, now)
            case _:
                assert_never(event)
        if self.announcements and self._can_announce():
            actions += self._announce(self.announcements.popleft(), now)
        if self.pending is not None and not self.busy:
            self._apply(self.pending)
            self.pending = None
            actions.append(ApplySettings())
        return actions

    def _rest_state(self) -> State:
        return State.IDLE if self.connected else State.OFFLINE

    def _to(self, state: State) -> None:
        if state is not self.state:
            log.debug("state %s → %s", self.state.value, state.value)
            self.state = state

    def _thinking(self, now: float) -> None:
        self._to(State.THINKING)
        self.thinking_since = now

    def _set_problem(self, problem: str | None, cue: bool = True) -> list[Action]:
        """A new problem gets its cue once (the LED keeps showing it while it lasts)."""
        if problem == self.problem:
            return []
        self.problem = problem
        return [Cue(problem)] if problem is not None and cue else []

    # -------------------------------------------------------------- turns

    def _start_turn(self, now: float) -> list[Action]:
        self._to(State.LISTENING)
        self.sent_ms, self.turn_started = 0, now
        self.follow_up_until = 0.0
        if not self.connected and self.outage_since is None:
            self.outage_since = now  # held until the link is back (or the grace runs out)
        return [StartStreaming(press=self.mode == "push_to_talk"), Cue("listen_start")]

    def _end_turn(self, now: float) -> list[Action]:
        actions: list[Action] = [StopStreaming()]
        if self.sent_ms < MIN_COMMIT_MS:
            self.counters.dropped_turns += 1
            if self.sent_ms and self.connected:
                actions.append(Send(ce.Clear()))
            if self.outage_since is not None:
                actions.append(DiscardBuffered("turn too short"))
                self.outage_since = None
            self._to(self._rest_state())
            return [*actions, Cue("short")]
        self.counters.turns += 1
        self._thinking(now)
        actions.append(Cue("listen_end"))
        if self.server_commits and self.connected:
            return actions  # server VAD commits and answers by itself
        if not self.connected:  # keep it: sent as soon as the session is back
            self.turn_waiting = True
            return actions
        return [*actions, *_COMMIT]

    def _interrupt(self, now: float) -> list[Action]:
        actions: list[Action] = [FlushPlayback(), *self._cancel_tools()]
        self.playing = False
        self.fault_after_playback = None
        if self.response_active:
            actions.append(Send(ce.Cancel()))
            self.response_active = False
        if self.item_id is not None:
            actions.append(Truncate(self.item_id))
            self.item_id = None
        self.counters.interrupts += 1
        return actions

    def _drop_waiting(self, reason: str) -> list[Action]:
        """Forget a turn held for the link (the user moved on)."""
        if not self.turn_waiting and self.outage_since is None:
            return []
        self.turn_waiting, self.outage_since = False, None
        return [DiscardBuffered(reason)]

    # -------------------------------------------------------------- button & control

    def _on_press(self, now: float) -> list[Action]:
        s = self.state
        if s is State.MUTED:
            return []
        if s is State.SPEAKING:
            return [*self._interrupt(now), *self._start_turn(now)]
        if s is State.THINKING:
            actions: list[Action] = self._cancel_tools()
            if self.response_active:
                actions.append(Send(ce.Cancel()))
                self.response_active = False
                self.counters.interrupts += 1
            self.turn_waiting = False
            return [*actions, *self._start_turn(now)]
        if s is State.LISTENING:
            return [] if self.mode == "push_to_talk" else self._end_turn(now)
        return self._start_turn(now)  # IDLE, OFFLINE (held through the outage), ERROR

    def _on_release(self, now: float) -> list[Action]:
        if self.mode == "push_to_talk" and self.state is State.LISTENING:
            return self._end_turn(now)
        return []

    def _on_talk(self, now: float) -> list[Action]:
        if self.state is State.LISTENING:
            return self._end_turn(now)
        return self._on_press(now)

    def _on_interrupt(self, now: float) -> list[Action]:
        if self.state in (State.SPEAKING, State.THINKING):
            actions = [*self._interrupt(now), *self._drop_waiting("interrupted")]
            self._to(self._rest_state())
            return actions
        return []

    def _on_mute(self, on: bool | None, now: float) -> list[Action]:
        """``on`` None toggles (double press); True/False are idempotent (`ctl mute|unmute`)."""
        muted = self.state is State.MUTED
        if on is muted:
            return []  # already so
        if muted:
            self._to(self._rest_state())
            return [Listen(True), Cue("muted")]
        actions: list[Action] = []
        if self.state is State.LISTENING:
            actions = [StopStreaming()]
            if self.sent_ms and self.connected:
                actions.append(Send(ce.Clear()))
        if self.state is State.SPEAKING:
            actions += self._interrupt(now)
        if self.state is State.THINKING:
            actions += self._cancel_tools()
            if self.response_active:
                actions.append(Send(ce.Cancel()))
                self.response_active = False
        actions += self._drop_waiting("muted")  # a turn held for the link is not sent later
        self._to(State.MUTED)
        return [*actions, Listen(False), Cue("muted")]

    def _on_long_hold(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.state is State.LISTENING:
            actions.append(StopStreaming())
            self._to(self._rest_state())
        return [*actions, Reconnect()]

    # -------------------------------------------------------------- voice gate

    def _on_speech_start(self, now: float) -> list[Action]:
        if self.state is not State.IDLE or self.mode == "push_to_talk":
            return []
        if self.mode == "hands_free" or now < self.follow_up_until:
            return self._start_turn(now)
        return []

    def _on_speech_end(self, e: SpeechEnd, now: float) -> list[Action]:
        if self.state is not State.LISTENING or self.mode == "push_to_talk":
            return []
        if e.server == (self.detection == "server"):
            return self._end_turn(now)
        return []

    def _on_barge_in(self, now: float) -> list[Action]:
        if self.state is State.SPEAKING:
            return [*self._interrupt(now), *self._start_turn(now)]
        return []

    def _on_mic_audio(self, e: MicAudio) -> list[Action]:
        """Turn speech goes out now when the session is up. The server's input buffer dies
        with the link, so everything of a turn not yet committed is also held (bounded by
        the uplink) and replayed whole on the next session; with server VAD, which commits
        by itself, only what could not be sent is held."""
        if self.state is not State.LISTENING:
            return []
        self.sent_ms += e.frame.milliseconds
        send = self.connected and self.outage_since is None
        return [Uplink(e.frame, send=send, hold=not send or not self.server_commits)]

    # -------------------------------------------------------------- server

    def _on_response_started(self, now: float) -> list[Action]:
        self.response_active = True
        self.calls.clear()
        self.approvals.clear()
        if self.state in (State.IDLE, State.THINKING) and self.connected:
            self._thinking(now)
        return []

    def _on_assistant_item(self, e: AssistantItem, now: float) -> list[Action]:
        if self.response_active:
            self.item_id = e.item_id
            self.thinking_since = now
        return []

    def _on_assistant_audio(self, e: AssistantAudio) -> list[Action]:
        if not self.response_active and self.item_id != e.item_id:
            return []  # stale audio of a cancelled response: never played
        self.item_id = e.item_id
        self.playing = True
        if self.state in (State.THINKING, State.IDLE):
            self._to(State.SPEAKING)
        return [Play(e.item_id, e.pcm)] if self.state is State.SPEAKING else []

    def _on_response_finished(self, e: ResponseFinished, now: float) -> list[Action]:
        self.response_active = False
        calls, self.calls = tuple(self.calls.values()), {}
        approvals, self.approvals = dict(self.approvals), {}
        in_turn = self.state in (State.THINKING, State.SPEAKING)
        answerable = in_turn or self.state is State.IDLE
        if e.status == "completed" and (calls or approvals) and self.connected and answerable:
            return self._answer_calls(calls, approvals, now)
        if e.status in ("failed", "incomplete"):
            log.warning("the answer %s: %s", e.status, e.reason or "no reason given")
            self.counters.failed_responses += 1
            why = f"response {e.status} ({e.reason or 'no reason given'})"
            quota = is_quota(e.reason)
            if not in_turn:
                self.last_error = why
                return self._set_problem(Problem.QUOTA) if quota else []
            if self.playing:  # let the part that came play out, then say it was cut short
                self.fault_after_playback = (why, quota)
                return []
            return self._fault(why, now, quota=quota)
        if e.status == "completed" and self.problem == Problem.QUOTA:
            self.problem = None  # answers come again
        # not playing: nothing came, or the speaker already ran dry before the response ended
        # (audio slower than real time): either way the turn is over
        if in_turn and not self.playing:
            self.item_id = None
            self._to(self._rest_state())
            self._arm_follow_up(now)
        return []

    def _on_server_fault(self, e: ServerFault, now: float) -> list[Action]:
        code = e.code if isinstance(e.code, str) else None
        log.log(
            logging.INFO if code in BENIGN_ERRORS else logging.WARNING,
            "server error %s%s: %s",
            e.kind or "error",
            f" ({code})" if code else "",
            e.message,
        )
        if code in BENIGN_ERRORS:
            return []  # harmless races: the state machine has already moved on
        if code == "input_audio_buffer_commit_empty" and self.state is State.THINKING:
            self.counters.dropped_turns += 1
            self._to(self._rest_state())
            return [Cue("short")]
        quota = is_quota(code, e.kind)
        if self.state in (State.THINKING, State.LISTENING):
            actions: list[Action] = [StopStreaming()] if self.state is State.LISTENING else []
            return [*actions, *self._fault(e.message, now, quota=quota)]
        self.last_error = e.message
        return self._set_problem(Problem.QUOTA) if quota else []

    def _fault(self, message: str, now: float, quota: bool = False) -> list[Action]:
        """The turn failed: ERROR on the LED for a moment and the error cue (the quota cue
        when the account is out of quota, which stays shown until answers come again)."""
        self.last_error = message
        self.error_until = now + ERROR_SHOW_S
        self.response_active, self.item_id, self.playing = False, None, False
        self._to(State.ERROR)
        if quota:
            self.problem = Problem.QUOTA
            return [Cue(Problem.QUOTA)]
        return [Cue("error")]

    def _on_playback_finished(self, now: float) -> list[Action]:
        """The speaker ran dry (the service says so whenever it is idle)."""
        if not self.playing:
            return []
        self.playing = False
        if self.state is State.SPEAKING and not self.response_active:
            self.item_id = None
            if self.tool_batch is not None:  # "let me check": the tools are still running
                self._thinking(now)
                return []
            if self.fault_after_playback is not None:
                (why, quota), self.fault_after_playback = self.fault_after_playback, None
                return self._fault(why, now, quota=quota)
            self._to(self._rest_state())
            self._arm_follow_up(now)
        return []

    def _on_playback_stalled(self, now: float) -> list[Action]:
        """SPEAKING never waits on a speaker that cannot play: the answer stops, the server
        keeps only what was heard (cancel + truncate), and the user sees and hears the fault
        (the cue plays once the device is back)."""
        if not self.playing:
            return []  # nothing was being played: nothing lost
        self.playing, self.fault_after_playback = False, None
        if self.state is not State.SPEAKING:
            return []
        actions: list[Action] = [FlushPlayback()]
        if self.response_active:
            actions.append(Send(ce.Cancel()))
            self.response_active = False
        if self.item_id is not None:
            actions.append(Truncate(self.item_id))
            self.item_id = None
        return [*actions, *self._fault("the speaker stopped playing the answer", now)]

    def _arm_follow_up(self, now: float) -> None:
        if self.mode == "toggle":
            self.follow_up_until = now + self.idle_timeout_s
        elif self.mode == "wake_word" and self.follow_up_s > 0:
            self.follow_up_until = now + self.follow_up_s

    def _on_wake(self, e: WakeWord, now: float) -> list[Action]:
        """The word starts a turn like a press (over an answer too, unless that may be the
        device's own echo); the turn's audio is replayed from where the word ended."""
        if self.mode != "wake_word" or self.state in (State.MUTED, State.LISTENING):
            return []
        if self.state is State.SPEAKING and e.echo and self.echo_gated:
            return []
        log.info("wake word %s heard", e.word)
        actions = self._on_press(now)
        if self.state is not State.LISTENING:
            return actions
        return [*actions, Rewind(e.word_end)]

    # -------------------------------------------------------------- link

    def _on_link_up(self, now: float) -> list[Action]:
        self.connected = True
        actions: list[Action] = []
        self.problem = None
        if not self.ever_connected:
            self.ever_connected = True
            actions.append(Cue("connected"))
        else:  # a renewed or reconnected session starts empty: give it the recent turns
            actions.append(RestoreContext())
        if self.outage_since is not None or self.turn_waiting:
            self.outage_since = None
            actions.append(ReplayBuffered())
            if self.turn_waiting:
                self.turn_waiting = False
                self.thinking_since = now
                if not self.server_commits or self.state is State.THINKING:
                    actions += _COMMIT
            return actions
        if self.state is State.OFFLINE or (self.state is State.ERROR and now >= self.error_until):
            self._to(State.IDLE)
        return actions

    def _on_link_down(self, e: LinkDown, now: float) -> list[Action]:
        was_connected, self.connected = self.connected, False
        held = self.state is State.LISTENING or (self.state is State.THINKING and self.turn_waiting)
        if e.planned:  # a renewal: nothing is lost and nothing is shown
            if held and self.outage_since is None:
                self.outage_since = now
            return []
        problem = LINK_PROBLEMS.get(e.kind or "", Problem.OFFLINE)
        if held:
            if self.outage_since is None:
                self.outage_since = now  # the service holds the audio meanwhile
            self._set_problem(problem, cue=False)  # the turn's own cue tells if it is lost
            return []
        actions: list[Action] = self._cancel_tools()
        self.calls.clear()
        if self.state in (State.THINKING, State.SPEAKING):
            actions += [FlushPlayback()] if self.playing else []
            self.playing, self.response_active, self.item_id = False, False, None
            self.fault_after_playback = None
            self.counters.lost_turns += 1
        if was_connected or e.reason:
            self.last_error = e.reason or "connection lost"
        actions += self._set_problem(problem)
        if self.state is not State.MUTED and self.state is not State.ERROR:
            self._to(State.OFFLINE)
        return actions

    # -------------------------------------------------------------- tools

    def _on_tool_call(self, e: ToolCall) -> list[Action]:
        """Collected per response; the same call may come twice (arguments done, item done)
        and the later one fills in a name the first lacked."""
        if not self.response_active:
            return []  # a call of a cancelled response: never run
        known = self.calls.get(e.call_id)
        if known is None or (not known.name and e.name):
            self.calls[e.call_id] = e
        return []

    def _answer_calls(
        self, calls: tuple[ToolCall, ...], approvals: dict[str, bool], now: float
    ) -> list[Action]:
        """The response asked for tools: answer the approvals, run the calls; the one
        response.create follows when every output is in (:meth:`_on_tools_done`)."""
        actions: list[Action] = [Send(ce.McpApproval(r, ok)) for r, ok in approvals.items()]
        if not self.playing:
            self._thinking(now)
        if not calls:
            self.thinking_since = now
            return [*actions, Send(ce.CreateResponse())]
        self.batches += 1
        self.tool_batch = self.batches
        self.counters.tool_calls += len(calls)
        return [*actions, RunTools(self.batches, calls)]

    def _on_tools_done(self, e: ToolsDone, now: float) -> list[Action]:
        if e.batch != self.tool_batch:
            log.info("dropped the outputs of cancelled tool batch %d", e.batch)
            return []  # stale: the user moved on; nothing of it reaches the server
        self.tool_batch = None
        actions: list[Action] = [Send(ce.FunctionOutput(c, out)) for c, out in e.outputs]
        if e.end:
            if not self.playing:
                self._to(self._rest_state())
            self.follow_up_until = 0.0
            return actions
        if not self.playing:
            self._thinking(now)
        self.thinking_since = now
        return [*actions, Send(ce.CreateResponse())]

    def _cancel_tools(self) -> list[Action]:
        if self.tool_batch is None:
            return []
        batch, self.tool_batch = self.tool_batch, None
        self.counters.tools_cancelled += 1
        return [CancelTools(batch)]

    # -------------------------------------------------------------- announcements

    def _on_announce(self, e: Announce, now: float) -> list[Action]:
        """Queued for the next idle moment, or (``interrupt``) said now over what goes on."""
        if not e.interrupt or self.state is State.MUTED:
            self.announcements.append(e)
            return []
        actions: list[Action] = []
        if self.state in (State.SPEAKING, State.THINKING):
            actions = [*self._interrupt(now), *self._drop_waiting("interrupted")]
        elif self.state is State.LISTENING:
            actions = [StopStreaming()]
            if self.sent_ms and self.connected:
                actions.append(Send(ce.Clear()))
            actions += self._drop_waiting("interrupted")
        self._to(self._rest_state())
        self.announcements.appendleft(e)
        return actions

    def _can_announce(self) -> bool:
        return (
            self.state is State.IDLE
            and self.connected
            and not self.busy
            and not self.response_active
            and not self.playing
        )

    def _announce(self, e: Announce, now: float) -> list[Action]:
        if e.ask:
            events: list[Action] = [Send(ce.UserText(e.text)), Send(ce.CreateResponse())]
        elif self.tts_text:
            events = [Send(ce.UserText(e.text, "tts_text")), Send(ce.CreateResponse())]
        else:  # out of band: spoken, and nothing enters the conversation
            instructions = VERBATIM.format(text=e.text)
            events = [Send(ce.CreateResponse(out_of_band=True, instructions=instructions))]
        self._thinking(now)
        return events

    def _renew_when_idle(self) -> list[Action]:
        """Renew only at an idle moment; the link is down for the core from now on. While
        offline, one reconnect (with the new settings) does it."""
        why = self.renew_wanted
        if why is None or self.busy or self.state is State.ERROR:
            return []
        if not self.connected:
            if self.state is not State.OFFLINE:
                return []
            self.renew_wanted = None
            return [Reconnect()]
        self.connected, self.renew_wanted = False, None
        return [Renew(why)]

    # -------------------------------------------------------------- time

    def _on_tick(self, now: float) -> list[Action]:
        if (
            self.state is State.LISTENING
            and self.mode == "wake_word"
            and self.sent_ms == 0
            and now - self.turn_started >= WAKE_WAIT_S
        ):
            log.info("wake word but no speech in %g s", WAKE_WAIT_S)
            return self._end_turn(now)
        if self.state is State.LISTENING and now - self.turn_started >= self.max_turn_s:
            log.info("turn reached turn.max_turn_s (%.0f s): ending it", self.max_turn_s)
            return self._end_turn(now)
        if self.outage_since is not None and now - self.outage_since >= OUTAGE_GRACE_S:
            self.outage_since = None
            self.turn_waiting = False
            self.counters.lost_turns += 1
            actions: list[Action] = []
            if self.state is State.LISTENING:
                actions.append(StopStreaming())
            return [
                *actions,
                DiscardBuffered("the connection did not come back"),
                *self._fault("turn lost: the connection did not come back in time", now),
            ]
        if (
            self.state is State.THINKING
            and not self.turn_waiting
            and self.tool_batch is None  # a tool has its own timeout
            and now - self.thinking_since >= self.response_timeout_s
        ):
            self.counters.no_answer += 1
            log.warning(
                "no answer from the server in %g s: giving up the turn", self.response_timeout_s
            )
            return [  # a late answer must not start playing after the user was told
                Send(ce.Cancel()),
                *self._fault(f"no answer from the server in {self.response_timeout_s:g} s", now),
            ]
        if self.state is State.ERROR and now >= self.error_until:
            self._to(self._rest_state())
        return self._renew_when_idle()


#: a finished turn: the server holds it now (the held copy goes), and an answer is asked for
_COMMIT: tuple[Action, ...] = (Send(ce.Commit()), DiscardBuffered(), Send(ce.CreateResponse()))


def server_inputs(event: ev.ServerEvent) -> list[Input]:
    """The state machine's view of a typed server event (transcripts and rate limits are
    only shown, by the service)."""
    match event:
        case ev.AudioChunk(item_id=item_id, pcm=pcm):
            return [AssistantAudio(item_id, pcm)]
        case ev.AudioDone(item_id=item_id):
            return [AssistantAudioDone(item_id)]
        case ev.ResponseCreated(response_id=response_id):
            return [ResponseStarted(response_id)]
        case ev.ItemAdded(item_id=item_id, role="assistant"):
            return [AssistantItem(item_id)]
        case ev.ResponseDone(status=status, reason=reason):
            return [ResponseFinished(status, reason)]
        case ev.ServerError(type=kind, code=code, message=message):
            return [ServerFault(code, message, kind)]
        case ev.SpeechStarted():
            return [ServerSpeechStart()]
        case ev.SpeechStopped():
            return [SpeechEnd(server=True)]
        case ev.FunctionCall(call_id=call_id, name=name, arguments=arguments):
            return [ToolCall(call_id, name, arguments)]
    return []
