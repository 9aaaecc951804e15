"""The daemon: where config, audio, voice policy, protocol, state machine and devices meet.

Every decision lives in a pure module (conversation, voice gate, codecs); this module moves
data between them and the I/O adapters and owns the process lifecycle: signals, sd_notify
and the watchdog, live reload, and a bounded clean shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, assert_never

from agentd import __version__, logs
from agentd import conversation as cv
from agentd.audio import echo
from agentd.audio.alsa import RELAXED_CARD_MS, Capture, Playback
from agentd.audio.frame import AudioFrame
from agentd.config import Config, ConfigError, Loaded, led_config, load, register_secrets, summary
from agentd.config.schema import WireSettings
from agentd.control import COMMANDS, ControlServer, SocketInUse
from agentd.device.gpio import Gpio, show_error
from agentd.downlink import Downlink
from agentd.hat import Hat
from agentd.history import History
from agentd.notify import Notifier
from agentd.realtime import client_events as ce
from agentd.realtime import dialects
from agentd.realtime import events as ev
from agentd.realtime.connection import Link, LinkState
from agentd.state import Persisted, state_dir
from agentd.supervise import RESTART_DELAY_S, HandlerErrors, RestartBudget
from agentd.tools.registry import Call
from agentd.tools.toolbox import Toolbox
from agentd.uplink import Uplink, format_rejected
from agentd.voice import gate as vg
from agentd.voice.wake import WakeListener

log = logging.getLogger("agentd")

SHUTDOWN_BUDGET_S = 2.0
LOOP_STALL_S = 5.0  # the ticker (every TICK_S) silent this long: the event loop is stuck
# A truncate waits for the flush before it to stop the device (Playback.stopping), at most
# this long: until then the speaker plays on, and on a loaded machine (the thread woken late)
# the truncate, counted when it was decided, reported 21 ms less than was heard.
TRUNCATE_WAIT_S = 0.25
READY_WAIT_S = 1.0  # READY=1 waits at most this long for audio and the first connect attempt
TICK_S = 0.05
IDLE_TICK_S = 0.5  # the ticker's period while idle with a silent speaker: no timer is near
TRANSCRIPT_MAX = 65536  # characters kept of one item's transcript while it streams
TRIM_EVERY_S = 30.0  # give freed heap back to the OS while idle (glibc keeps it otherwise)
MAX_LEFT_BEHIND = 3  # wedged microphone threads left behind at once; then the watchdog acts
EXIT_TASK_FAILED = 1  # a task kept dying: systemd restarts us (78 is kept for config errors)
#: what STATUS= and `ctl status` call each problem (each has its own cue in device/cues.py)
PROBLEM_TEXT = {
    cv.Problem.AUTH: "key rejected",
    cv.Problem.QUOTA: "out of quota or rate limited",
    cv.Problem.OFFLINE: "network down",
}


def trim_memory() -> None:
    """glibc keeps freed audio buffers in its arenas (RSS creeps up over thousands of turns);
    malloc_trim returns them. A no-op where the C library has no malloc_trim."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def freeze_heap() -> None:
    """What the daemon made starting up (modules, config, devices, ~40,000 objects the
    collector tracks) is moved out of the cyclic garbage collector's sight, once, as it
    becomes ready. A full collection walks every object it tracks with the GIL held, and
    every thread waits it out, Playback's writer too: over the start-up heap 15-30 ms on an
    x86 core, several times that on a Pi, against a speaker buffer of 60 ms
    (bench/gc_pause.py). Frozen, a full collection walks only what was made since. No
    collection is made here: the devices already run, and a 56 ms one at this point ran the
    speaker's device dry as its stream began (e2e run H67). What is frozen is still freed
    by reference counting; only its cycles wait for :func:`gc.unfreeze` (the daemon's stop)."""
    gc.freeze()


@dataclasses.dataclass
class Hooks:
    """Test and demo seams that swap a whole adapter or observe, never a decision."""

    pin_factory: Any = None
    use_gpio: bool = True
    on_state: Callable[[str], None] | None = None
    on_transcript: Callable[[str, str], None] | None = None
    on_cue: Callable[[str], None] | None = None  # each cue the daemon plays, by name
    on_led: Callable[[cv.State, bool, str | None], None] | None = None  # each LED request
    # The adapters, built with the arguments the real ones take; a test passes in-memory fakes.
    make_capture: Callable[..., Capture] = Capture
    make_playback: Callable[..., Playback] = Playback
    make_link: Callable[..., Link] = Link


class Daemon:
    def __init__(self, config_path: Path, loaded: Loaded, hooks: Hooks | None = None) -> None:
        self.config_path = config_path
        self.loaded = loaded
        self.cfg: Config = loaded.config
        self.hooks = hooks or Hooks()
        self.started = time.monotonic()
        self.notifier = Notifier()
        self.conv = cv.Conversation.from_settings(
            self.cfg.turn,
            voice_barge_in=self.cfg.echo.barge_in == "voice",
            tts_text=self.cfg.api.dialect == "xstar",
            echo_gated=self.cfg.echo.mode == "half_duplex",
        )
        self.gate = vg.VoiceGate(
            vg.VoiceSettings.of(self.cfg.turn.mode, self.cfg.vad, self.cfg.echo)
        )
        # the microphone path's echo canceller / NS / AGC: made once per daemon, its far end
        # tapped from the playback writer (agentd/audio/echo.py)
        self.far_end = echo.FarEnd()
        self.echo = echo.make(echo.EchoSetup.of(self.cfg.echo, self.cfg.audio.input), self.far_end)
        self.link: Link | None = None
        self.capture: Capture | None = None
        self._left_behind: list[Capture] = []  # wedged microphone threads given up on
        self.playback: Playback | None = None
        self.gpio: Gpio | None = None
        self.control: Any = None
        self.stop_event = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wire_fell_back = False  # the server refused the compressed uplink: PCM instead
        self.uplink = Uplink(
            dialects.input_rate(self.cfg.api, self.wire),
            self.cfg.turn.max_turn_s,
            wire=self.wire,
        )
        self.downlink = Downlink(self.wire.output, dialects.output_rate(self.cfg.api, self.wire))
        self._mic_on = True  # off while muted: the microphone is not even looked at
        # microphone frames waiting for their far end to be written (echo.HOLD_MAX_S)
        self._held: deque[tuple[float, AudioFrame]] = deque()
        self._release: asyncio.TimerHandle | None = None
        self._audio_errors: dict[str, str | None] = {"capture": None, "playback": None}
        self._tasks: list[asyncio.Task[Any]] = []
        self._transcripts: dict[str, str] = {}
        self.reload_failed: str | None = None
        self._rate_limits: tuple[ev.RateLimits, float] | None = None
        self._last_state = self.conv.state
        self._last_look: tuple[cv.State, str | None] = (self.conv.state, None)
        self.last_tick = time.monotonic()
        self._link_task: asyncio.Task[Any] | None = None
        self._pb_faults = 0  # playback.stats.faults already turned into PlaybackStalled
        self.unhealthy: str | None = None  # why the watchdog is withheld, while it is
        self.errors = HandlerErrors(log)
        self.restarts = RestartBudget()
        self.exit_code = 0
        # reloaded settings that wait for the end of the turn in flight
        self._next_gate: vg.VoiceGate | None = None
        self._session_pending = False
        self.persisted = Persisted(state_dir())
        self._muted_saved = False
        self.hat = Hat(self.cfg, self.persisted)  # volume, event stream, recordings, cues
        self.toolbox = Toolbox(
            self.cfg.agent.tools, self.cfg.api.dialect, self, self._tools_changed
        )
        self._tool_tasks: dict[int, asyncio.Task[Any]] = {}
        self._mcp_tasks: list[asyncio.Task[Any]] = []
        self.history = self._new_history(self.cfg)
        self.wake = wake_listener(self.cfg)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        c = self.conv.counters
        cap, pb = self.capture, self.playback
        return {
            "ok": True,
            "version": __version__,
            "state": self.conv.state.value,
            "connected": self.conv.connected,
            "dialect": self.cfg.api.dialect,
            "model": dialects.model(self.cfg.api),
            "user_id": self.cfg.device.user_id,
            "turn_mode": self.cfg.turn.mode,
            "turns": c.turns,
            "interrupts": c.interrupts,
            "dropped_turns": c.dropped_turns,
            "lost_turns": c.lost_turns,
            "failed_responses": c.failed_responses,
            "no_answer": c.no_answer,
            "problem": self.conv.problem,
            "last_error": self.conv.last_error or (self.link.last_error if self.link else None),
            "audio_errors": {k: v for k, v in self._audio_errors.items() if v},
            "overruns": cap.stats.overruns if cap else 0,
            "dropped_frames": cap.stats.dropped_frames if cap else 0,
            "frame_errors": cap.stats.frame_errors if cap else 0,
            "underruns": pb.stats.underruns if pb else 0,
            "speaker_starved": pb.stats.starved if pb else 0,
            "playback_stalls": pb.stats.stalls if pb else 0,
            "playback_refused_ms": pb.stats.refused_ms if pb else 0,
            "audio_reopens": (cap.stats.reopens if cap else 0) + (pb.stats.reopens if pb else 0),
            "unhealthy": self.unhealthy,
            "reconnects": self.link.reconnects if self.link else 0,
            "protocol_errors": self.link.protocol_errors if self.link else 0,
            "event_errors": self.link.handler_errors if self.link else 0,
            "rate_limits": self._rate_limits_status(),
            "gpio": bool(self.gpio and self.gpio.available),
            "gpio_error": self.gpio.error if self.gpio else None,
            "muted": self.conv.state is cv.State.MUTED,
            "mute_switch": self.conv.switch_muted,
            "reload_error": self.reload_failed,
            "handler_errors": self.errors.total,
            "task_restarts": self.restarts.total,
            "tools": [t["name"] for t in self.toolbox.session_tools() if "name" in t],
            "tool_calls": c.tool_calls,
            "tools_cancelled": c.tools_cancelled,
            "uptime_s": round(time.monotonic() - self.started, 1),
            **self.hat.status(),
            "wake_detections": self.wake.detections if self.wake else 0,  # wake_word mode
            "wire": {"input": self.wire.input, "output": self.wire.output},  # after any fallback
        }

    def set_volume(self, level: int) -> int:
        """The one volume setter (0..100: `ctl volume`, the set_volume tool)."""
        return self.hat.set_volume(level)

    def output_volume(self) -> float:
        """0..1, for the tools."""
        return (self.hat.volume.level if self.hat.volume else 100) / 100

    def set_output_volume(self, level: float) -> None:
        self.set_volume(round(level * 100))

    def _rate_limits_status(self) -> list[dict[str, Any]]:
        """The server's latest rate_limits.updated; ``resets_in_s`` counts from now."""
        if self._rate_limits is None:
            return []
        limits, at = self._rate_limits
        age = time.monotonic() - at
        return [
            {
                "name": r.name,
                "limit": r.limit,
                "remaining": r.remaining,
                "resets_in_s": round(max(0.0, r.reset_seconds - age), 1),
                "updated_s_ago": round(age, 1),
            }
            for r in limits.limits
        ]

    def status_line(self) -> str:
        link = "connected" if self.conv.connected else "offline"
        extra = ""
        if self.conv.problem is not None:
            detail = (self.link.last_error if self.link else None) or self.conv.last_error
            extra = f"; {PROBLEM_TEXT[self.conv.problem]}" + (f": {detail}" if detail else "")
        extra += "".join(f"; {err}" for err in self._audio_errors.values() if err)
        if self.reload_failed:
            extra += f"; reload failed: {self.reload_failed}"
        return f"{self.conv.state.value}, {link} to {self.cfg.api.dialect}{extra}"

    def _show_led(self) -> None:
        """The state's pattern, or a repeating error blink while a sound device is gone."""
        if self.gpio is not None:
            fault = any(self._audio_errors.values())
            self.gpio.show(self.conv.state, fault=fault, problem=self.conv.shown_problem)
            if self.hooks.on_led is not None:
                self.hooks.on_led(self.conv.state, fault, self.conv.shown_problem)

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        self.loop = loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        for w in self.loaded.warnings:
            log.warning("%s", w)
        register_secrets(self.cfg.api, self._key())
        log.info("agentd %s starting: %s", __version__, summary(self.cfg))
        try:
            await self._start_control()  # first: a second instance must not grab the devices
        except SocketInUse as exc:
            log.error("agentd not started: %s", exc)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.notifier.close()
            return 1
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_error)
        if self.persisted.muted():
            log.info("muted, as before the restart (agentd ctl unmute, or double-press)")
            self._muted_saved = True
            self.feed(cv.Mute(True))
        self._start_audio(loop)
        self._start_gpio(loop)
        self.link = self.hooks.make_link(self.cfg, self._key(), self._on_server, self._on_link)
        self.link.set_tools(self.toolbox.session_tools())
        self._link_task = self._supervise("link", self._run_link)
        self._start_tool_servers()
        await self._wait_ready()
        freeze_heap()
        self.notifier.ready(self.status_line())
        self._supervise("ticker", self._ticker)
        if self.notifier.watchdog_s:
            self._supervise("watchdog", self._watchdog)
        await self.stop_event.wait()
        await self.shutdown()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        loop.set_exception_handler(previous_handler)
        return self.exit_code

    def _key(self) -> str | None:
        return self.loaded.api_key.reveal() if self.loaded.api_key else None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.record("a background task", task.exception())  # type: ignore[arg-type]

    # ------------------------------------------------------------------ supervision

    @contextlib.contextmanager
    def _caught(self, where: str) -> Iterator[None]:
        """One failing event is counted and logged (rate-limited); the daemon goes on."""
        try:
            yield
        except Exception as exc:
            self.errors.record(where, exc)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Exceptions in loop callbacks (device threads' hand-overs, GPIO callbacks)."""
        exc = context.get("exception")
        if isinstance(exc, Exception):
            self.errors.record(str(context.get("message") or "an event loop callback"), exc)
        else:
            loop.default_exception_handler(context)

    def _supervise(self, name: str, run: Callable[[], Any]) -> asyncio.Task[Any]:
        """A task that is restarted when it ends; the returned task ends only on shutdown or
        when the daemon gives up (then it exits non-zero)."""
        return self._spawn(self._keep_running(name, run))

    async def _keep_running(self, name: str, run: Callable[[], Any]) -> None:
        """Restart ``run`` whenever it ends; when it keeps ending, exit non-zero so that
        systemd restarts the whole daemon."""
        while not self.stop_event.is_set():
            try:
                await run()
                why = "ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors.record(f"the {name} task", exc)
                why = f"failed ({type(exc).__name__})"
            if self.stop_event.is_set():
                return
            if not self.restarts.allow(name):
                log.critical(
                    "the %s task %s %d times in a row: exiting so that systemd restarts agentd",
                    name,
                    why,
                    self.restarts.budget + 1,
                )
                self.exit_code = EXIT_TASK_FAILED
                self.stop_event.set()
                return
            log.error("the %s task %s; restarting it", name, why)
            await asyncio.sleep(RESTART_DELAY_S)

    async def _run_link(self) -> None:
        assert self.link is not None
        try:
            await self.link.run()
        finally:
            if self.conv.connected and not self.stop_event.is_set():
                self.feed(cv.LinkDown("the connection task stopped"))

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            audio_known = all(
                d is None or d.first_attempt.is_set() for d in (self.capture, self.playback)
            )
            link_tried = self.link is not None and (self.link.connected or self.link.last_error)
            if audio_known and link_tried:
                return
            await asyncio.sleep(0.01)

    def _start_audio(self, loop: asyncio.AbstractEventLoop) -> None:
        self.playback = self.hooks.make_playback(
            self.cfg.audio.output,
            dialects.output_rate(self.cfg.api, self.wire),
            lambda e: self._audio_status("playback", e),
        )
        self.capture = self._make_capture(loop)
        self._pace_card()
        self._pb_faults = 0
        self._tap_far_end()
        self.playback.start()
        self.capture.start()
        self.hat.open_volume(self.cfg.audio.output)

    def _make_capture(self, loop: asyncio.AbstractEventLoop) -> Capture:
        return self.hooks.make_capture(
            self.cfg.audio.input, loop, self._on_mic, lambda e: self._audio_status("capture", e)
        )

    def _supervise_capture(self, now: float) -> None:
        """A microphone thread stuck in one driver call for WEDGED_S is left behind and a new
        one opens the device afresh: what a restart by the watchdog would do, without losing
        the session. At most MAX_LEFT_BEHIND are left at once (each holds a thread and a
        stream): a card that hangs every stream is left to the watchdog."""
        cap, loop = self.capture, self.loop
        if cap is None or loop is None or (stuck := cap.wedged(now)) is None:
            return
        self._left_behind = [c for c in self._left_behind if c.alive()]
        if len(self._left_behind) >= MAX_LEFT_BEHIND:
            return
        what = f"{stuck}; opening it afresh"
        (log.debug if cap.error else log.error)("%s", what)
        cap.request_stop()  # it leaves if the call ever returns, handing nothing over
        self._left_behind.append(cap)
        new = self._make_capture(loop)
        new.succeed(cap, what)
        self.capture = new
        self._pace_card()
        self._audio_status("capture", what)
        new.start()

    def _pace_card(self) -> None:
        """The microphone's card period: period_ms where frames are waited for, long where
        none ever is (a change reopens the device); then the idle speaker closes too (its
        open stream would keep a sound server sending the microphone 20 ms packets)."""
        relaxed = not self.gate.s.frames_wait
        if self.capture is not None:
            period = self.cfg.audio.input.period_ms
            self.capture.card_period_ms = RELAXED_CARD_MS if relaxed else period
        if self.playback is not None:
            self.playback.park_s = Playback.PARK_S if relaxed else None

    def _tap_far_end(self) -> None:
        """The canceller's far end is tapped from the writer; with AEC the speaker's stream
        runs continuously (silence between answers), so its latency stays put."""
        if self.playback is not None:
            self.playback.far_end = self.far_end if self.echo is not None else None
            self.playback.continuous = self.echo is not None and self.echo.setup.aec

    async def _stop_audio(self) -> None:
        """Joined off the loop: a thread stuck in a driver call must not freeze the daemon."""
        await asyncio.gather(*(d.aclose() for d in (self.capture, self.playback) if d))

    def _audio_status(self, kind: str, error: str | None) -> None:
        """Called from a device thread: record the fault on the loop, show it in STATUS=."""

        def apply() -> None:
            self._audio_errors[kind] = error
            self._show_led()
            self.notifier.status(self.status_line())

        if self.loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                self.loop.call_soon_threadsafe(apply)

    def _start_gpio(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.hooks.use_gpio:
            return
        self.gpio = Gpio(
            self.cfg.button,
            self.cfg.led,
            loop,
            self.feed,
            self.hooks.pin_factory,
            mute_switch=self.cfg.mute_switch,
        )
        if self.gpio.start():
            self._show_led()

    async def _start_control(self) -> None:
        self.control = ControlServer(self.cfg.control.socket, self._control, self.hat.events)
        await self.control.start()

    async def shutdown(self) -> None:
        """Stop capture, flush playback, close the WebSocket with 1000, LED off: ≤ 2 s."""
        self.notifier.stopping()
        log.info("stopping")
        t0 = time.monotonic()
        if self.capture is not None:
            await self.capture.aclose(0.5)
        if self.playback is not None:
            self.playback.flush()
        if self.link is not None:
            await self.link.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*self._tasks, return_exceptions=True),
                max(0.1, SHUTDOWN_BUDGET_S - (time.monotonic() - t0) - 0.5),
            )
        if self.playback is not None:
            await self.playback.aclose(0.3)
        if self.gpio is not None:
            self.gpio.off()
            self.gpio.close()
        if self.control is not None:
            await self.control.close()
        await self.hat.close()
        self.notifier.close()
        gc.unfreeze()  # (a process that runs a daemon again, as the tests do, collects this one)
        log.info("stopped in %.2f s", time.monotonic() - t0)

    # ------------------------------------------------------------------ inputs

    def feed(self, event: cv.Input) -> None:
        """One input into the state machine, its actions carried out, the LED/status updated.
        A failing input or action is counted and logged; the others still happen."""
        now = time.monotonic()
        actions: list[cv.Action] = []
        with self._caught(f"handling {type(event).__name__}"):
            actions = self.conv.handle(event, now)
        for action in actions:
            with self._caught(f"carrying out {type(action).__name__}"):
                self._act(action, now)
        look = (self.conv.state, self.conv.shown_problem)
        if look != self._last_look:
            self._last_look = look
            with self._caught("showing the state"):
                self._show_led()
                self.notifier.status(self.status_line())
        state_changed = self.conv.state is not self._last_state
        with self._caught("telling subscribers"):
            self.hat.changed(self.conv, state_changed)
        if state_changed:
            self._last_state = self.conv.state
            log.info("state: %s", self.conv.state.value)
            if self.hooks.on_state is not None:
                with self._caught("the on_state hook"):
                    self.hooks.on_state(self.conv.state.value)
            muted = self.conv.state is cv.State.MUTED
            if muted != self._muted_saved:
                self._muted_saved = muted
                self.persisted.set_muted(muted)

    def _speaker(self, now: float) -> vg.Speaker:
        pb = self.playback
        if pb is None:
            return vg.Speaker()
        heard = self.echo.heard_s if self.echo is not None else float("inf")
        settled = self.echo.settled if self.echo is not None else True
        echo = self.echo.echo_energy if self.echo is not None else 0.0
        busy = pb.busy(now)
        # (a native copy per frame: only where voice barge-in weighs it, VoiceGate._double_talk)
        wanted = busy and self.gate.s.barge_in == "voice"
        linear = self.echo.linear() if wanted and self.echo is not None else None
        return vg.Speaker(
            busy,
            pb.last_played_at,
            heard,
            settled,
            echo,
            b"" if linear is None else linear.tobytes(),
            self.echo.over_echo_db if wanted and self.echo is not None else None,
            self.echo is not None and self.echo.slipped,
            self.echo is not None and self.echo.refitting,
        )

    def _on_mic(self, frame: AudioFrame) -> None:
        with self._caught("a microphone frame"):
            if self._held or self._owed(frame):
                self._held.append((time.monotonic(), frame))
                self._release_soon()
                return
            self._mic_frame(frame)

    def _owed(self, frame: AudioFrame) -> bool:
        """The canceller's far end for ``frame`` is not all written yet (FarEnd.owed_s); only
        AEC3 needs it (noise suppression or gain alone take it only to keep pace)."""
        ec = self.echo
        return (
            ec is not None
            and ec.setup.aec
            and self._mic_on
            and self.loop is not None  # (nothing would let it go)
            and self.far_end.owed_s(frame.samples) > 0
        )

    def _truncate(self, item_id: str, since: float, session: int) -> None:
        """Truncate ``item_id`` at what was heard, once the device has stopped playing it
        (or TRUNCATE_WAIT_S passed), on the session it played in (``session``: the link's
        ``reconnects`` then): a session opened meanwhile does not know the item."""
        pb, link = self.playback, self.link
        if pb is None or link is None:
            return
        if link.reconnects != session:
            log.info("not truncating %s: the session it played in has closed", item_id)
            return
        if pb.stopping and time.monotonic() - since < TRUNCATE_WAIT_S and self.loop is not None:
            self.loop.call_later(pb.POLL_S, self._truncate, item_id, since, session)
            return
        with self._caught("a truncate"):
            heard = pb.heard_ms(item_id)
            log.info("interrupted: truncating %s at %d ms heard", item_id, heard)
            link.send(ce.Truncate(item_id, 0, heard))

    def _release_soon(self) -> None:
        if self._release is None and self.loop is not None:
            self._release = self.loop.call_later(echo.HOLD_POLL_S, self._release_held)

    def _release_held(self) -> None:
        """Held frames on, in order, once their far end is written or HOLD_MAX_S passed."""
        self._release = None
        with self._caught("a microphone frame"):
            now = time.monotonic()
            while self._held:
                t, frame = self._held[0]
                if now - t < echo.HOLD_MAX_S and self._owed(frame):
                    self._release_soon()
                    return
                self._held.popleft()
                self._mic_frame(frame)

    def _mic_frame(self, frame: AudioFrame) -> None:
        if self.echo is not None:
            if not self._mic_on:  # the far end keeps pace with the unheard microphone
                self.far_end.take(frame.samples, frame.timestamp or None)
                return
            frame = self.echo.process(frame)
        if not self._mic_on:
            return  # muted: neither the gate nor the wake-word detector hears anything
        speaker = self._speaker(time.monotonic())
        if self.wake is not None and (heard := self.wake.process(frame)) is not None:
            echo = self.gate.echo_guard(frame, speaker)
            self.feed(cv.WakeWord(heard.word, heard.word_end, echo=echo))
        events = self.gate.process(frame, speaker)
        self._pace_capture()
        self._gate_events(events)

    def _gate_events(self, events: list[vg.VoiceEvent]) -> None:
        for e in events:
            match e:
                case vg.Audio():
                    self.feed(cv.MicAudio(e.frame))
                case vg.SpeechStarted():
                    self.feed(cv.SpeechStart())
                case vg.SpeechEnded():
                    self.feed(cv.SpeechEnd())
                case vg.BargeIn():
                    log.info("barge-in: the user spoke over the answer")
                    self.feed(cv.BargeIn())

    def _pace_capture(self) -> None:
        """Frames the gate need not decide at once (pre-roll only, an onset looked for) come
        in batches: fewer wake-ups."""
        if self.capture is not None:
            self.capture.gather(self.gate.frame_wait_ms // self.cfg.audio.input.period_ms)

    # ------------------------------------------------------------------ actions

    def _act(self, a: cv.Action, now: float) -> None:
        """Carry out one action of the state machine; every decision was made there."""
        link, pb = self.link, self.playback
        match a:
            case cv.Send(event):
                if isinstance(event, ce.Commit):  # the encoder's last packet of the turn first
                    for packet in self.uplink.finish():
                        if link is not None:
                            link.send(ce.AppendAudio(packet))
                elif isinstance(event, ce.Cancel):
                    self.downlink.reset()
                if link is not None:
                    link.send(event)
                if isinstance(event, ce.UserText) and event.kind == "input_text":
                    self.history.said("user", event.text)  # a text turn has no transcript
            case cv.Uplink(frame, send, hold):
                if self.hat.recorder is not None:
                    self.hat.recorder.mic(frame.audio, frame.rate)
                for packet in self.uplink.encode(self.uplink.convert(frame)):
                    if send and link is not None:
                        link.send(ce.AppendAudio(packet))
                    if hold:
                        self.uplink.hold(packet)
            case cv.Play(item_id, pcm, last):
                if self.hat.recorder is not None:
                    self.hat.recorder.answer(pcm, dialects.output_rate(self.cfg.api, self.wire))
                if pb is not None:
                    rate = dialects.output_rate(self.cfg.api, self.wire)
                    self._play(pcm, item_id, rate, last=last)
            case cv.StartStreaming(press):
                if press:
                    self.gate.press()
                    self._pace_capture()
                self.uplink.new_turn()
                self.hat.turn_started(self.conv.counters.turns)
                if pb is not None:  # an answer (or a cue) is coming: reopen a parked speaker
                    pb.warm()
            case cv.StopStreaming():
                self.gate.release()
                self.gate.new_turn()
                if pb is not None:
                    pb.warm()
            case cv.Truncate(item_id):
                if link is not None and pb is not None:
                    self.downlink.reset()
                    self._truncate(item_id, time.monotonic(), link.reconnects)
            case cv.FlushPlayback():
                self.downlink.reset()
                if pb is not None:
                    pb.flush()
                self.gate.barge_in.reset()
            case cv.Listen(on):
                self._mic_on = on
            case cv.Cue(name):
                self._cue(name)
            case cv.Reconnect():
                if link is not None:
                    log.info("reconnect requested")
                    link.reconnect()
            case cv.Renew(reason):
                if link is not None:
                    log.info("renewing the session %s", reason)
                    link.reconnect(renewing=True)
            case cv.ApplySettings():
                self._apply_settings()
            case cv.ReplayBuffered():
                if link is not None:
                    log.info("connection back: sending %d ms of held speech", self.uplink.held_ms)
                    for pcm in self.uplink.take():
                        link.send(ce.AppendAudio(pcm))
            case cv.DiscardBuffered(reason):
                if reason is not None and self.uplink.held_ms:
                    log.error("dropped %d ms of speech: %s", self.uplink.held_ms, reason)
                self.uplink.clear()
            case cv.RunTools(batch, calls):
                self._tool_tasks[batch] = self._spawn(self._run_tools(batch, calls))
            case cv.CancelTools(batch):
                if (task := self._tool_tasks.pop(batch, None)) is not None:
                    log.info("interrupted: cancelling the tools running")
                    task.cancel()
            case cv.RestoreContext():
                if link is not None and len(self.history):
                    log.info("new session: carrying %d recent items into it", len(self.history))
                    for item in self.history.replay():
                        link.send(item)
            case cv.Rewind(since):
                if self.wake is not None:  # the audio after the word, up to this frame
                    self.gate.wake_turn()
                    for f in self.wake.since(since):
                        self._gate_events(self.gate.process(f))
            case _:
                assert_never(a)

    # ------------------------------------------------------------------ tools

    async def _run_tools(self, batch: int, calls: tuple[cv.ToolCall, ...]) -> None:
        """One batch off the event loop's critical path; its outputs go back as an input
        (the core drops them when the batch was cancelled meanwhile)."""
        try:
            todo = tuple(Call(c.call_id, c.name, c.arguments) for c in calls)
            outputs, effect = await self.toolbox.run_batch(todo)
        finally:
            self._tool_tasks.pop(batch, None)
        for call, (_, output) in zip(calls, outputs, strict=True):
            self.history.called(call.call_id, call.name, call.arguments, output)
        self.feed(cv.ToolsDone(batch, outputs, end=effect is not None))
        if effect == "mute":
            self.feed(cv.Mute(True))

    def _start_tool_servers(self) -> None:
        self._mcp_tasks = [
            self._supervise(f"MCP server {name}", serve)
            for name, serve in self.toolbox.server_runs().items()
        ]

    def _reload_tools(self, cfg: Config) -> None:
        """New agent.tools: a new toolbox (MCP servers restarted), offered from the next
        session.update at a rest (a batch running now finishes with the old one)."""
        for task in self._mcp_tasks:
            task.cancel()
        self.toolbox = Toolbox(cfg.agent.tools, cfg.api.dialect, self, self._tools_changed)
        self._start_tool_servers()
        if self.link is not None and self.link.set_tools(self.toolbox.session_tools()):
            self._session_pending = True
        log.info("reload: tools now %s", ", ".join(self.status()["tools"]) or "none")

    def _tools_changed(self) -> None:
        """An MCP server's tools came or went: the session offers what is there now."""
        if self.link is not None and self.link.set_tools(self.toolbox.session_tools()):
            self.link.update_session()

    def _new_history(self, cfg: Config) -> History:
        """xStar remembers per userId itself: nothing is carried there."""
        turns = 0 if cfg.api.dialect == "xstar" else cfg.agent.context_turns
        return History(turns, cfg.agent.context_chars)

    # the builtins' view of the device (agentd.tools.builtin.Device)

    def device_status(self) -> dict[str, Any]:
        return {
            k: self.status()[k]
            for k in ("state", "connected", "uptime_s", "last_error", "muted", "problem")
        } | {"volume_percent": round(self.output_volume() * 100)}

    def _cue(self, name: str) -> None:
        if not self.cfg.sounds.enabled or self.playback is None:
            return
        sound = self.hat.cues.pcm(name)  # a file, the generated tone, or None (muted: silent)
        if sound is None:
            return
        if self.hooks.on_cue is not None:
            self.hooks.on_cue(name)
        self._play(sound[0], None, sound[1], gain=1.0, last=True)

    def _play(
        self, pcm: bytes, item: str | None, rate: int, gain: float | None = None, last: bool = False
    ) -> None:
        pb = self.playback
        assert pb is not None
        gain = self.hat.gain(pb.settings.volume if gain is None else gain)  # software volume
        pb.play(pcm, item, rate=rate, gain=gain, last=last)

    # ------------------------------------------------------------------ server side

    def _on_link(self, s: LinkState) -> None:
        self.downlink.reset()  # a new session's first delta starts a new stream
        if s.connected:
            self.feed(cv.LinkUp())
        else:  # a planned renewal is no outage: no OFFLINE flash, a turn meanwhile is held
            self.feed(cv.LinkDown(s.error, s.kind, planned=s.renewing))
        with self._caught("sending STATUS="):
            self.notifier.status(self.status_line())

    def _on_server(self, e: ev.ServerEvent) -> None:
        with self._caught(f"a server event ({type(e).__name__})"):
            self._server_event(e)

    def _server_event(self, e: ev.ServerEvent) -> None:
        """Codec → state machine → actions; transcripts and rate limits are only shown."""
        match e:
            case ev.TranscriptDelta() | ev.TranscriptDone():
                self._transcript(e)
                empty = isinstance(e, ev.TranscriptDone) and e.role == "user" and not e.text.strip()
                if empty and self.conv.sent_ms >= 500:  # a whole turn heard as nothing
                    self._wire_fallback("the server transcribed a whole turn as nothing")
            case ev.RateLimits():
                self._rate_limits = (e, time.monotonic())
            case ev.McpApprovalRequest(request_id=rid, server_label=label, name=name):
                approve = self.toolbox.registry.approves(label)
                log.info(
                    "MCP server %s asks to run %s: %s",
                    label,
                    name,
                    "approved" if approve else "denied",
                )
                self.feed(cv.ApprovalAsked(rid, approve))
            case ev.ServerError(code=code, message=message) if format_rejected(code, message):
                self._wire_fallback(f"the server refused it: {message}")
            case ev.AudioChunk(response_id=rid, item_id=item, pcm=data):
                e = dataclasses.replace(e, pcm=self.downlink.audio(rid, item, data))
            case ev.AudioDone(response_id=rid, item_id=item):
                if tail := self.downlink.done(rid, item):
                    self.feed(cv.AssistantAudio(item, tail))
        for event in cv.server_inputs(e):
            self.feed(event)

    def _transcript(self, e: ev.TranscriptDelta | ev.TranscriptDone) -> None:
        if isinstance(e, ev.TranscriptDelta):
            # bounded: a server may stream deltas for one item forever
            so_far = self._transcripts.get(e.item_id, "")
            self._transcripts[e.item_id] = (so_far + e.text)[:TRANSCRIPT_MAX]
            while len(self._transcripts) > 16:  # interrupted items never get their "done"
                self._transcripts.pop(next(iter(self._transcripts)))
            return
        text = e.text or self._transcripts.pop(e.item_id, "")
        self._transcripts.pop(e.item_id, None)
        self.history.said(e.role, text)
        if self.cfg.logging.transcripts:
            log.info("%s said: %s", e.role, text)
        self.hat.transcript(e.role, text)
        if self.hooks.on_transcript is not None:
            self.hooks.on_transcript(e.role, text)

    # ------------------------------------------------------------------ time, health

    async def _ticker(self) -> None:
        trimmed = time.monotonic()
        while True:
            pb = self.playback
            quiet = self.conv.state is cv.State.IDLE and (pb is None or not pb.busy())
            await asyncio.sleep(IDLE_TICK_S if quiet else TICK_S)
            self.last_tick = now = time.monotonic()
            idle = self.conv.state in (cv.State.IDLE, cv.State.OFFLINE, cv.State.MUTED)
            if idle and now - trimmed >= TRIM_EVERY_S:
                trimmed = now
                trim_memory()
            pb = self.playback
            if pb is not None and pb.stats.faults != self._pb_faults:
                self._pb_faults = pb.stats.faults  # the speaker hung or vanished
                self.feed(cv.PlaybackStalled())
            if pb is not None and not pb.busy(now):
                self.feed(cv.PlaybackFinished())
            self.feed(cv.Tick())
            self._supervise_capture(now)
            link = self.link
            if link is not None and link.renew_due():  # the core renews at an idle moment
                self.feed(
                    cv.RenewDue(f"before api.session_max_s ({link.cfg.api.session_max_s:.0f} s)")
                )

    def health(self) -> str | None:
        """What keeps the daemon from doing its job, or None: the loop ticks, the link task
        runs (connected, or retrying on schedule), an open microphone's frames reach the loop,
        and the speaker plays what it is given. A device being reopened, or a link waiting
        out its backoff, is doing its job."""
        now = time.monotonic()
        if now - self.last_tick > LOOP_STALL_S:
            return f"event loop stalled for {now - self.last_tick:.0f} s"
        task, link = self._link_task, self.link
        if task is None or task.done() or link is None:
            return "the connection task ended"
        if not link.on_schedule():
            return "the connection is stuck (no attempt when one was due)"
        for dev in (self.capture, self.playback):
            if dev is not None and (problem := dev.problem()) is not None:
                return problem
        return None

    def healthy(self) -> bool:
        return self.health() is None

    async def _watchdog(self) -> None:
        """WATCHDOG=1 only while healthy: systemd restarts a daemon that stays broken for
        WatchdogSec. Said once when it turns unhealthy and once when it recovers."""
        assert self.notifier.watchdog_s
        period = self.notifier.watchdog_s / 2
        while not self.stop_event.is_set():  # stopping: devices close, that is no fault
            problem = self.health()
            if problem is None:
                self.notifier.watchdog()
                if self.unhealthy is not None:
                    log.info("healthy again: watchdog pings resume")
            elif problem != self.unhealthy:
                log.error("unhealthy: %s; withholding the watchdog ping", problem)
            self.unhealthy = problem
            await asyncio.sleep(period)

    # ------------------------------------------------------------------ control & reload

    async def _control(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Answer a command from control.COMMANDS (the socket lets no other name through)."""
        command = COMMANDS[cmd]
        if cmd in ("say", "ask"):
            interrupt = bool(args.get("interrupt"))
            self.feed(cv.Announce(str(args["text"]), ask=cmd == "ask", interrupt=interrupt))
            queued = len(self.conv.announcements)
            return {"ok": True, "state": self.conv.state.value, "queued": queued}
        if command.feed is not None:
            self.feed(command.feed)
            if cmd == "unmute" and self.conv.switch_muted:
                return {"ok": False, "error": "the mute switch is on: turn it off to unmute"}
            return {"ok": True, "state": self.conv.state.value}
        match cmd:
            case "status":
                return self.status()
            case "reload":
                ok, problems = await self.reload()
                return {"ok": ok, "problems": problems}
            case "volume":
                return self.hat.volume_command(args.get("value"))
            case "subscribe":  # the control server streams it; reached only without a feed
                return {"ok": False, "error": "no event stream here"}
        raise NotImplementedError(f"control command {cmd!r} has no answer in the daemon")

    async def reload(self) -> tuple[bool, list[str]]:
        """Re-read and validate; invalid → keep running on the old config, say so."""
        self.notifier.reloading()
        try:
            loaded = await asyncio.to_thread(load, self.config_path)
        except ConfigError as exc:
            for p in exc.problems:
                log.error("reload: %s", p)
            self.reload_failed = (
                f"{len(exc.problems)} problem(s) in {self.config_path}; kept the old config"
            )
            log.error("reload failed: %s", self.reload_failed)
            self.notifier.ready(self.status_line())
            return False, list(exc.problems)
        self.reload_failed = None
        old, new = self.cfg, loaded.config
        self.loaded, self.cfg = loaded, new
        logs.set_level(new.logging.level)
        register_secrets(new.api, self._key())
        # Turn, voice gate and session settings apply from the next turn, and a new url, key
        # or headers wait for an idle moment like a renewal: nothing in flight is dropped.
        voice = vg.VoiceSettings.of(new.turn.mode, new.vad, new.echo)
        if voice != vg.VoiceSettings.of(old.turn.mode, old.vad, old.echo):
            self._next_gate = vg.VoiceGate(voice)
        setup = echo.EchoSetup.of(new.echo, new.audio.input)
        if setup != echo.EchoSetup.of(old.echo, old.audio.input):
            log.info("reload: microphone processing changed: %s", setup)
            self.echo = echo.make(setup, self.far_end)
            self._tap_far_end()
        if self.link is not None:
            session = self.link.session
            if self.link.configure(new, self._key()):
                log.info("reload: server settings changed: new session at the next idle moment")
                self.feed(cv.RenewDue("for the reloaded server settings"))
            elif self.link.session != session:
                self._session_pending = True
        if (old.agent.tools, old.api.dialect) != (new.agent.tools, new.api.dialect):
            self._reload_tools(new)
        self.feed(
            cv.Reconfigure(
                new.turn,
                voice_barge_in=new.echo.barge_in == "voice",
                echo_gated=new.echo.mode == "half_duplex",
            )
        )
        if self._wire_fell_back and new.audio.wire.input != old.audio.wire.input:
            self._wire_fell_back = False  # a new uplink format gets its own chance
        self._patch_session()
        if old.audio.wire.output != new.audio.wire.output or old.api != new.api:
            self.downlink.configure(new.audio.wire.output, dialects.output_rate(new.api, self.wire))
        if old.audio != new.audio or dialects.output_rate(
            old.api, old.audio.wire
        ) != dialects.output_rate(new.api, new.audio.wire):
            log.info("reload: audio devices changed: reopening")
            await self._stop_audio()
            self._start_audio(asyncio.get_running_loop())
        await self.hat.reload(old, new)
        gpio = (old.button, old.led, old.mute_switch) != (new.button, new.led, new.mute_switch)
        if gpio and self.gpio is not None:
            log.info("reload: GPIO changed: rebinding")
            self.gpio.close()
            self._start_gpio(asyncio.get_running_loop())
        if old.control != new.control and self.control is not None:
            await self.control.close()
            try:
                await self._start_control()
            except SocketInUse as exc:
                log.error("reload: control socket not moved: %s", exc)
        log.info("reloaded %s", self.config_path)
        self.notifier.ready(self.status_line())
        return True, []

    def _apply_settings(self) -> None:
        """The core put reloaded turn settings in force (no turn in flight): the voice gate,
        the uplink resampler and the session follow."""
        if self._next_gate is not None:
            self.gate, self._next_gate = self._next_gate, None
            self._pace_card()
        if (self.cfg.turn.mode == "wake_word") != (self.wake is not None) or (
            self.wake is not None
            and (self.wake.settings, self.wake.mic_suppressed)
            != (self.cfg.wake, self.cfg.audio.input.noise_suppression > 0)
        ):
            self.wake = wake_listener(self.cfg)
        self.uplink.configure(
            dialects.input_rate(self.cfg.api, self.wire), self.cfg.turn.max_turn_s, self.wire
        )
        if self._session_pending and self.link is not None:
            self._session_pending = False
            log.info("reload: session settings changed: session.update")
            self.link.update_session()

    # ------------------------------------------------------------------ wire formats

    @property
    def wire(self) -> WireSettings:
        """audio.wire as in force: the uplink is PCM once the server refused its format."""
        wire = self.cfg.audio.wire
        return dataclasses.replace(wire, input="pcm") if self._wire_fell_back else wire

    def _wire_fallback(self, why: str) -> None:
        """The server cannot take our compressed uplink: PCM from now on, once, one line."""
        if self._wire_fell_back or self.cfg.audio.wire.input == "pcm":
            return
        self._wire_fell_back = True
        log.warning(
            "audio.wire.input %s: %s; sending PCM from now on", self.cfg.audio.wire.input, why
        )
        self.uplink.configure(
            dialects.input_rate(self.cfg.api, self.wire), self.cfg.turn.max_turn_s, self.wire
        )
        if self._patch_session() and self.link is not None and self.link.connected:
            self.link.update_session()

    def _patch_session(self) -> bool:
        """The link's session names the uplink format in force; True when that changed it."""
        if self.link is None:
            return False
        fmt = dialects.input_format(self.cfg.api, self.wire)
        if self.link.session.input_format == fmt:
            return False
        self.link.session = dataclasses.replace(self.link.session, input_format=fmt)
        return True


def wake_listener(cfg: Config) -> WakeListener | None:
    """The wake-word detector, in wake_word mode only (nothing else pays for it)."""
    if cfg.turn.mode != "wake_word":
        return None
    return WakeListener(cfg.wake, mic_suppressed=cfg.audio.input.noise_suppression > 0)


EX_CONFIG = 78  # the unit's RestartPreventExitStatus=: restarting cannot fix a bad config


def run_main(config_path: Path, hooks: Hooks | None = None) -> int:
    """`agentd run`: load the config, then run until SIGTERM. A config or key error is one
    log line, the error blink on the LED when there is one, and exit 78 (no restart loop)."""
    logs.setup_logging("info")
    try:
        loaded = load(config_path)
    except ConfigError as exc:
        problems = "; ".join(p.replace("\n", " ") for p in exc.problems)
        log.error(
            "agentd not started: %s: %s (fix it, check with: sudo agentd check-config, then "
            "sudo systemctl restart agentd)",
            config_path,
            problems,
        )
        cfg = led_config(config_path)
        if cfg is not None and (hooks is None or hooks.use_gpio):
            show_error(cfg.led, hooks.pin_factory if hooks else None)
        return EX_CONFIG
    logs.set_level(loaded.config.logging.level)
    os.umask(0o007)
    return asyncio.run(Daemon(config_path, loaded, hooks).run())
