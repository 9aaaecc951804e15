"""The conversation state machine: who may talk when, and what to do about it.

Pure: :meth:`Conversation.handle` takes one input (button, control command, voice gate,
server or playback event, link up/down, a clock tick) and returns the actions the service
must carry out. No I/O, no clock of its own, so every transition and race is a table row
in the tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

from agentd.config import Config

log = logging.getLogger("agentd.conversation")

MIN_COMMIT_MS = 100  # servers reject a commit of less audio
OUTAGE_GRACE_S = 5.0  # a turn held during an outage is sent if the link is back this soon
ERROR_SHOW_S = 3.0
#: error codes that only mean a race (cancel after the end, a second response.create)
BENIGN_ERRORS = frozenset(
    {"conversation_already_has_active_response", "response_cancel_not_active", "item_not_found"}
)  # how long ERROR stays on the LED before returning to IDLE


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
    (the button's double press)."""

    on: bool | None = None


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
class AudioSent:
    ms: int


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str


@dataclass(frozen=True, slots=True)
class AssistantItem:
    item_id: str


@dataclass(frozen=True, slots=True)
class AssistantAudio:
    item_id: str


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    status: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ServerFault:
    code: str | None
    message: str


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    pass


@dataclass(frozen=True, slots=True)
class LinkUp:
    pass


@dataclass(frozen=True, slots=True)
class LinkDown:
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    pass


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
    | AudioSent
    | ResponseStarted
    | AssistantItem
    | AssistantAudio
    | ResponseFinished
    | ServerFault
    | PlaybackFinished
    | LinkUp
    | LinkDown
    | Tick
)

# ------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class StartStreaming:
    pass


@dataclass(frozen=True, slots=True)
class StopStreaming:
    pass


@dataclass(frozen=True, slots=True)
class Commit:
    pass


@dataclass(frozen=True, slots=True)
class CreateResponse:
    pass


@dataclass(frozen=True, slots=True)
class ClearInput:
    pass


@dataclass(frozen=True, slots=True)
class Cancel:
    pass


@dataclass(frozen=True, slots=True)
class Truncate:
    """Truncate ``item_id`` to what was heard (the service asks playback how much)."""

    item_id: str


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
class ReplayBuffered:
    """Send the audio held during an outage."""


@dataclass(frozen=True, slots=True)
class DiscardBuffered:
    reason: str


Action = (
    StartStreaming
    | StopStreaming
    | Commit
    | CreateResponse
    | ClearInput
    | Cancel
    | Truncate
    | FlushPlayback
    | Cue
    | Reconnect
    | ReplayBuffered
    | DiscardBuffered
)


@dataclass
class Counters:
    turns: int = 0
    interrupts: int = 0
    dropped_turns: int = 0
    lost_turns: int = 0


@dataclass
class Conversation:
    mode: str = "push_to_talk"
    detection: str = "local"
    max_turn_s: float = 30.0
    idle_timeout_s: float = 20.0
    state: State = State.OFFLINE
    connected: bool = False
    counters: Counters = field(default_factory=Counters)
    last_error: str | None = None
    sent_ms: int = 0
    turn_started: float = 0.0
    response_active: bool = False
    item_id: str | None = None
    playing: bool = False
    follow_up_until: float = 0.0  # toggle: hands-free continuation deadline
    outage_since: float | None = None  # link lost while a turn was held
    turn_waiting: bool = False  # a finished turn waits for the link to come back
    error_until: float = 0.0
    ever_connected: bool = False

    @classmethod
    def from_config(cls, cfg: Config) -> Conversation:
        return cls(cfg.turn.mode, cfg.turn.detection, cfg.turn.max_turn_s, cfg.turn.idle_timeout_s)

    def configure(self, cfg: Config) -> None:
        """Live reload: new timings and mode apply from the next turn; nothing in flight is lost."""
        self.mode, self.detection = cfg.turn.mode, cfg.turn.detection
        self.max_turn_s, self.idle_timeout_s = cfg.turn.max_turn_s, cfg.turn.idle_timeout_s

    @property
    def streaming(self) -> bool:
        return self.state is State.LISTENING

    @property
    def server_commits(self) -> bool:
        return self.mode != "push_to_talk" and self.detection == "server"

    # -------------------------------------------------------------- dispatch

    def handle(self, event: Input, now: float) -> list[Action]:
        method = getattr(self, "_on_" + type(event).__name__, None)
        if method is None:
            return []
        actions: list[Action] = method(event, now)
        return actions

    def _rest_state(self) -> State:
        return State.IDLE if self.connected else State.OFFLINE

    def _to(self, state: State) -> None:
        if state is not self.state:
            log.debug("state %s → %s", self.state.value, state.value)
            self.state = state

    # -------------------------------------------------------------- turns

    def _start_turn(self, now: float) -> list[Action]:
        self._to(State.LISTENING)
        self.sent_ms, self.turn_started = 0, now
        self.follow_up_until = 0.0
        return [StartStreaming(), Cue("listen_start")]

    def _end_turn(self, now: float) -> list[Action]:
        actions: list[Action] = [StopStreaming()]
        if self.sent_ms < MIN_COMMIT_MS:
            self.counters.dropped_turns += 1
            if self.sent_ms and self.connected:
                actions.append(ClearInput())
            if self.outage_since is not None:
                actions.append(DiscardBuffered("turn too short"))
                self.outage_since = None
            self._to(self._rest_state())
            return [*actions, Cue("short")]
        self.counters.turns += 1
        self._to(State.THINKING)
        actions.append(Cue("listen_end"))
        if self.server_commits:
            return actions  # server VAD commits and answers by itself
        if not self.connected:  # keep it: sent as soon as the session is back
            self.turn_waiting = True
            return actions
        return [*actions, Commit(), CreateResponse()]

    def _interrupt(self, now: float) -> list[Action]:
        actions: list[Action] = [FlushPlayback()]
        self.playing = False
        if self.response_active:
            actions.append(Cancel())
            self.response_active = False
        if self.item_id is not None:
            actions.append(Truncate(self.item_id))
            self.item_id = None
        self.counters.interrupts += 1
        return actions

    # -------------------------------------------------------------- button & control

    def _on_Press(self, e: Press, now: float) -> list[Action]:
        s = self.state
        if s is State.MUTED:
            return []
        if s is State.SPEAKING:
            return [*self._interrupt(now), *self._start_turn(now)]
        if s is State.THINKING:
            actions: list[Action] = []
            if self.response_active:
                actions.append(Cancel())
                self.response_active = False
                self.counters.interrupts += 1
            self.turn_waiting = False
            return [*actions, *self._start_turn(now)]
        if s is State.LISTENING:
            return [] if self.mode == "push_to_talk" else self._end_turn(now)
        return self._start_turn(now)  # IDLE, OFFLINE (held through the outage), ERROR

    def _on_Release(self, e: Release, now: float) -> list[Action]:
        if self.mode == "push_to_talk" and self.state is State.LISTENING:
            return self._end_turn(now)
        return []

    def _on_Talk(self, e: Talk, now: float) -> list[Action]:
        if self.state is State.LISTENING:
            return self._end_turn(now)
        return self._on_Press(Press(), now)

    def _on_Interrupt(self, e: Interrupt, now: float) -> list[Action]:
        if self.state in (State.SPEAKING, State.THINKING):
            actions = self._interrupt(now)
            self._to(self._rest_state())
            return actions
        return []

    def _on_DoublePress(self, e: DoublePress, now: float) -> list[Action]:
        return self._on_Mute(Mute(None), now)

    def _on_Mute(self, e: Mute, now: float) -> list[Action]:
        muted = self.state is State.MUTED
        if e.on is muted:
            return []  # already so
        if muted:
            self._to(self._rest_state())
            return []
        actions: list[Action] = []
        if self.state is State.LISTENING:
            actions = [StopStreaming()]
            if self.sent_ms and self.connected:
                actions.append(ClearInput())
        if self.state is State.SPEAKING:
            actions += self._interrupt(now)
        self._to(State.MUTED)
        return actions

    def _on_LongHold(self, e: LongHold, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.state is State.LISTENING:
            actions.append(StopStreaming())
            self._to(self._rest_state())
        return [*actions, Reconnect()]

    # -------------------------------------------------------------- voice gate

    def _on_SpeechStart(self, e: SpeechStart, now: float) -> list[Action]:
        if self.state is not State.IDLE or self.mode == "push_to_talk":
            return []
        if self.mode == "hands_free" or now < self.follow_up_until:
            return self._start_turn(now)
        return []

    def _on_SpeechEnd(self, e: SpeechEnd, now: float) -> list[Action]:
        if self.state is not State.LISTENING or self.mode == "push_to_talk":
            return []
        if e.server == (self.detection == "server"):
            return self._end_turn(now)
        return []

    def _on_BargeIn(self, e: BargeIn, now: float) -> list[Action]:
        if self.state is State.SPEAKING:
            return [*self._interrupt(now), *self._start_turn(now)]
        return []

    def _on_AudioSent(self, e: AudioSent, now: float) -> list[Action]:
        if self.state is State.LISTENING:
            self.sent_ms += e.ms
        return []

    # -------------------------------------------------------------- server

    def _on_ResponseStarted(self, e: ResponseStarted, now: float) -> list[Action]:
        self.response_active = True
        if self.state in (State.IDLE, State.THINKING) and self.connected:
            self._to(State.THINKING)
        return []

    def _on_AssistantItem(self, e: AssistantItem, now: float) -> list[Action]:
        if self.response_active:
            self.item_id = e.item_id
        return []

    def _on_AssistantAudio(self, e: AssistantAudio, now: float) -> list[Action]:
        if not self.response_active and self.item_id != e.item_id:
            return []  # stale audio of a cancelled response: never played
        self.item_id = e.item_id
        self.playing = True
        if self.state in (State.THINKING, State.IDLE):
            self._to(State.SPEAKING)
        return []

    def _on_ResponseFinished(self, e: ResponseFinished, now: float) -> list[Action]:
        self.response_active = False
        if e.status == "failed":
            return self._fault(f"response failed ({e.reason or 'no reason given'})", now)
        # not playing: nothing came, or the speaker already ran dry before the response ended
        # (audio slower than real time): either way the turn is over
        if self.state in (State.THINKING, State.SPEAKING) and not self.playing:
            self.item_id = None
            self._to(self._rest_state())
            self._arm_follow_up(now)
        return []

    def _on_ServerFault(self, e: ServerFault, now: float) -> list[Action]:
        if e.code in BENIGN_ERRORS:
            return []  # harmless races: the state machine has already moved on
        if e.code == "input_audio_buffer_commit_empty" and self.state is State.THINKING:
            self.counters.dropped_turns += 1
            self._to(self._rest_state())
            return [Cue("short")]
        if self.state in (State.THINKING, State.LISTENING):
            actions: list[Action] = [StopStreaming()] if self.state is State.LISTENING else []
            return [*actions, *self._fault(e.message, now)]
        self.last_error = e.message
        return []

    def _fault(self, message: str, now: float) -> list[Action]:
        self.last_error = message
        self.error_until = now + ERROR_SHOW_S
        self._to(State.ERROR)
        return [Cue("error")]

    def _on_PlaybackFinished(self, e: PlaybackFinished, now: float) -> list[Action]:
        self.playing = False
        if self.state is State.SPEAKING and not self.response_active:
            self.item_id = None
            self._to(self._rest_state())
            self._arm_follow_up(now)
        return []

    def _arm_follow_up(self, now: float) -> None:
        if self.mode == "toggle":
            self.follow_up_until = now + self.idle_timeout_s

    # -------------------------------------------------------------- link

    def _on_LinkUp(self, e: LinkUp, now: float) -> list[Action]:
        self.connected = True
        actions: list[Action] = []
        if not self.ever_connected:
            self.ever_connected = True
            actions.append(Cue("connected"))
        if self.outage_since is not None:
            self.outage_since = None
            actions.append(ReplayBuffered())
            if self.turn_waiting:
                self.turn_waiting = False
                actions += [Commit(), CreateResponse()]
            return actions
        if self.state is State.OFFLINE or (self.state is State.ERROR and now >= self.error_until):
            self._to(State.IDLE)
        return actions

    def _on_LinkDown(self, e: LinkDown, now: float) -> list[Action]:
        self.connected = False
        if self.state is State.LISTENING or (self.state is State.THINKING and self.turn_waiting):
            if self.outage_since is None:
                self.outage_since = now  # the service holds the audio meanwhile
            return []
        actions: list[Action] = []
        if self.state in (State.THINKING, State.SPEAKING):
            actions = [FlushPlayback()] if self.playing else []
            self.playing, self.response_active, self.item_id = False, False, None
            self.last_error = e.reason or "connection lost"
            self.counters.lost_turns += 1
            actions.append(Cue("error"))
        if self.state is not State.MUTED and self.state is not State.ERROR:
            self._to(State.OFFLINE)
        return actions

    # -------------------------------------------------------------- time

    def _on_Tick(self, e: Tick, now: float) -> list[Action]:
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
        if self.state is State.ERROR and now >= self.error_until:
            self._to(self._rest_state())
        return []


def server_inputs(event: object) -> list[Input]:
    """The state machine's view of a typed server event (audio playback is the service's)."""
    from agentd.realtime import events as ev

    if isinstance(event, ev.AudioChunk):
        return [AssistantAudio(event.item_id)]
    if isinstance(event, ev.ResponseCreated):
        return [ResponseStarted(event.response_id)]
    if isinstance(event, ev.ItemAdded) and event.role == "assistant":
        return [AssistantItem(event.item_id)]
    if isinstance(event, ev.ResponseDone):
        return [ResponseFinished(event.status, event.reason)]
    if isinstance(event, ev.ServerError):
        return [ServerFault(event.code, event.message)]
    if isinstance(event, ev.SpeechStopped):
        return [SpeechEnd(server=True)]
    return []
