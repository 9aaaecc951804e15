"""Push button and status LED through gpiozero.

gpiozero calls back from its own thread on a Pi (and from the driving thread under
MockFactory): every callback is handed to the event loop with ``call_soon_threadsafe``.
Without usable GPIO the daemon runs on without button and LED after one warning that says
why (shown in `agentd ctl status` as ``gpio_error``).

lgpio makes a notify FIFO in its working directory when imported, and moves the process
there: ``LG_WD`` (the unit sets it to the runtime directory) picks a writable one, and the
working directory is put back so nothing else depends on where lgpio went.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from agentd.config import ButtonSettings, LedSettings, MuteSwitchSettings
from agentd.conversation import DoublePress, Input, LongHold, Mute, Press, Release, State
from agentd.conversation import Problem as P
from agentd.device.apa102 import Apa102Strip

log = logging.getLogger("agentd.gpio")

DOUBLE_PRESS_S = 0.4
ERROR_BLINKS = 3  # times the error pattern is shown before `agentd run` exits on a bad config

NO_SWITCH = MuteSwitchSettings()
FLASH_TICK_S = 0.05  # time step of the "flashes" pattern

#: per state: (pattern, argument); patterns are applied by :meth:`Gpio.show`.
#: blink: (on_s, off_s[, times]); flashes: (count, on_s, off_s, period_s), repeating.
PATTERNS: dict[State, tuple[str, tuple[float, ...]]] = {
    State.IDLE: ("dim", (0.05,)),
    State.LISTENING: ("solid", ()),
    State.THINKING: ("pulse", (0.8, 0.8)),
    State.SPEAKING: ("pulse", (0.25, 0.25)),
    State.OFFLINE: ("blink", (0.2, 1.8)),
    State.ERROR: ("blink", (0.08, 0.12, 3)),
    State.MUTED: ("blink", (0.05, 0.95)),
}
#: what the LED shows at rest while a problem lasts (a network outage is plain OFFLINE)
PROBLEM_PATTERNS: dict[str, tuple[str, tuple[float, ...]]] = {
    P.AUTH: ("flashes", (2, 0.15, 0.15, 2.0)),  # two quick flashes every 2 s
    P.QUOTA: ("blink", (1.0, 1.0)),  # slow even blink
}
PROBLEM_COLORS: dict[str, tuple[float, float, float]] = {
    P.AUTH: (1.0, 0.0, 0.0),
    P.QUOTA: (1.0, 0.8, 0.0),
}
COLORS: dict[State, tuple[float, float, float]] = {
    State.IDLE: (0.0, 0.0, 0.05),
    State.LISTENING: (0.0, 1.0, 0.0),
    State.THINKING: (0.0, 0.0, 1.0),
    State.SPEAKING: (0.0, 0.6, 1.0),
    State.OFFLINE: (1.0, 0.5, 0.0),
    State.ERROR: (1.0, 0.0, 0.0),
    State.MUTED: (1.0, 0.0, 1.0),
}


def colours(led: LedSettings) -> dict[State, tuple[float, float, float]]:
    """:data:`COLORS` with the owner's ``led.colors`` ("#rrggbb" per state) over them."""
    out = dict(COLORS)
    for name, text in led.colors.items():
        out[State(name)] = tuple(int(text[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[assignment]
    return out


@contextlib.contextmanager
def _kept_cwd() -> Iterator[None]:
    """lgpio chdirs to LG_WD on import: come back, so relative paths keep their meaning."""
    cwd = os.getcwd()
    try:
        yield
    finally:
        if os.getcwd() != cwd:
            os.chdir(cwd)


def _lgpio_factory() -> tuple[Any, str | None]:
    """gpiozero's lgpio factory (RPi.GPIO edge detection fails on kernel 6.6), or why not."""
    if not os.environ.get("LG_WD") and os.environ.get("RUNTIME_DIRECTORY"):
        os.environ["LG_WD"] = os.environ["RUNTIME_DIRECTORY"].split(":")[0]
    try:
        with _kept_cwd():
            from gpiozero.pins.lgpio import LGPIOFactory
    except ImportError as exc:
        return None, f"lgpio is not installed ({exc})"
    except OSError as exc:  # its notify FIFO: '.lgd-nfy-3' in an unwritable directory
        where = os.environ.get("LG_WD") or os.getcwd()
        return None, (
            f"lgpio cannot create its notify FIFO in {where} ({exc.strerror or exc}): set LG_WD "
            "to a writable directory (the unit sets LG_WD=%t/agentd)"
        )
    try:
        with _kept_cwd():
            return LGPIOFactory(), None
    except Exception as exc:
        return None, f"lgpio: {exc}"


def _cause(exc: BaseException, lgpio_error: str | None) -> str:
    """The reason a person can act on, not gpiozero's 'Unable to load any default pin factory'."""
    causes = []
    chips = sorted(glob.glob("/dev/gpiochip*"))
    if not chips:
        causes.append(
            "no /dev/gpiochip* here (not a Raspberry Pi, or its GPIO driver is not loaded)"
        )
    elif not any(os.access(c, os.R_OK | os.W_OK) for c in chips):
        causes.append(
            f"no access to {', '.join(chips)} (the user needs group gpio; the unit allows "
            "char-gpiochip)"
        )
    if lgpio_error and (not causes or "LG_WD" in lgpio_error):
        causes.append(lgpio_error)
    return "; ".join(causes) or f"{type(exc).__name__}: {exc}"


class Gpio:
    def __init__(
        self,
        button: ButtonSettings,
        led: LedSettings,
        loop: asyncio.AbstractEventLoop,
        on_input: Callable[[Input], None],
        pin_factory: Any = None,
        mute_switch: MuteSwitchSettings = NO_SWITCH,
    ) -> None:
        self.button_settings, self.led_settings = button, led
        self.switch_settings = mute_switch
        self.switch: Any = None
        self.colours = colours(led)
        self.loop = loop
        self.on_input = on_input
        self.pin_factory = pin_factory
        self.button: Any = None
        self.led: Any = None
        self.available = False
        self.error: str | None = None
        self._last_release = 0.0
        self._shown: tuple[State, bool, str | None] | None = None

    def start(self, quiet: bool = False) -> bool:
        """Bind button and LED; on failure log the real cause once (``quiet``: at debug)."""
        b, led = self.button_settings, self.led_settings
        self.error = None
        no_led = led.pin is None and led.rgb is None and led.kind == "gpio"
        if b.pin is None and no_led and self.switch_settings.pin is None:
            log.info("no GPIO configured (button.pin and led.pin are null)")
            return False
        lgpio_error: str | None = None
        try:
            with warnings.catch_warnings(record=True) as fallbacks, _kept_cwd():
                warnings.simplefilter("always")  # gpiozero's PinFactoryFallback: logged below
                import gpiozero

                factory = self.pin_factory
                if factory is None:
                    factory = gpiozero.Device.pin_factory
                if factory is None and not os.environ.get("GPIOZERO_PIN_FACTORY"):
                    factory, lgpio_error = _lgpio_factory()
                    gpiozero.Device.pin_factory = factory
                self._bind(gpiozero, factory)
        except Exception as exc:
            self.error = _cause(exc, lgpio_error)
            for w in fallbacks:
                log.debug("gpiozero: %s", w.message)
            log.log(
                logging.DEBUG if quiet else logging.WARNING,
                "GPIO unavailable: %s; running without button and LED",
                self.error,
            )
            self.close()
            return False
        for w in fallbacks:
            log.debug("gpiozero: %s", w.message)
        self.available = True
        return True

    def _bind(self, gpiozero: Any, factory: Any) -> None:
        b, led = self.button_settings, self.led_settings
        if b.pin is not None:
            self.button = gpiozero.Button(
                b.pin,
                pull_up=b.pull_up,
                bounce_time=b.bounce_ms / 1000 or None,
                hold_time=b.hold_ms / 1000,
                pin_factory=factory,
            )
            self.button.when_pressed = lambda *_: self._post(self._pressed)
            self.button.when_released = lambda *_: self._post(self._released)
            self.button.when_held = lambda *_: self._post(lambda: self.on_input(LongHold()))
        ms = self.switch_settings
        if ms.pin is not None:
            self.switch = gpiozero.Button(
                ms.pin,
                pull_up=ms.pull_up,
                active_state=None if ms.pull_up else ms.active_high,
                bounce_time=0.05,
                pin_factory=factory,
            )
            self.switch.when_pressed = lambda *_: self._post(lambda: self._switched(True))
            self.switch.when_released = lambda *_: self._post(lambda: self._switched(False))
            if self.switch.is_pressed:
                self._post(lambda: self._switched(True))
        if led.kind == "apa102":
            self.led = Apa102Strip(led, factory)
        elif led.rgb is not None:
            self.led = gpiozero.RGBLED(
                led.rgb.red,
                led.rgb.green,
                led.rgb.blue,
                active_high=led.active_high,
                pin_factory=factory,
            )
        elif led.pin is not None:
            cls = gpiozero.PWMLED if led.brightness < 1.0 or self._pwm_ok(factory) else gpiozero.LED
            self.led = cls(led.pin, active_high=led.active_high, pin_factory=factory)

    @staticmethod
    def _pwm_ok(factory: Any) -> bool:
        name = type(factory).__name__
        return "Mock" not in name or "PWM" in str(getattr(factory, "pin_class", ""))

    def _post(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def _pressed(self) -> None:
        if time.monotonic() - self._last_release < DOUBLE_PRESS_S:
            self.on_input(DoublePress())
            self._last_release = 0.0
            return
        self.on_input(Press())

    def _switched(self, on: bool) -> None:
        log.info("mute switch %s", "on: microphone closed" if on else "off")
        self.on_input(Mute(on, switch=True))

    def _released(self) -> None:
        self._last_release = time.monotonic()
        self.on_input(Release())

    def show(self, state: State, fault: bool = False, problem: str | None = None) -> None:
        """``fault``: a sound device is gone; the error blink then repeats until it is back
        instead of stopping after three. ``problem``: shown instead of the resting pattern
        (key rejected, out of quota)."""
        if self.led is None or (state, fault, problem) == self._shown:
            return
        self._shown = (state, fault, problem)
        import gpiozero

        if isinstance(self.led, Apa102Strip):
            self._show_strip(self.led, state, fault, problem)
            return
        if self.led.source is not None:
            self.led.source = None
        if fault:
            state, problem = State.ERROR, None
        pattern, args = PROBLEM_PATTERNS[problem] if problem else PATTERNS[state]
        if fault:
            args = args[:2]
        bright = self.led_settings.brightness
        rgb = isinstance(self.led, gpiozero.RGBLED)
        pwm = isinstance(self.led, gpiozero.PWMLED)
        if rgb:
            r, g, b = PROBLEM_COLORS[problem] if problem else self.colours[state]
            level: Any = (r * bright, g * bright, b * bright)
        else:
            level = bright if pwm else 1
        if pattern == "flashes":
            count, on, off, period = args
            self.led.off()
            self.led.source_delay = FLASH_TICK_S
            self.led.source = _flashes(int(count), on, off, period, level, self.led.value)
        elif rgb:
            if pattern == "blink":
                on, off, *n = args
                self.led.blink(on, off, on_color=level, n=int(n[0]) if n else None)
            else:
                self.led.color = level
        elif pattern == "dim":
            if pwm:
                self.led.value = args[0] * bright
            else:
                self.led.off()
        elif pattern == "solid":
            if pwm:
                self.led.value = bright
            else:
                self.led.on()
        elif pattern == "pulse" and pwm:
            self.led.pulse(fade_in_time=args[0], fade_out_time=args[1])
        elif pattern == "pulse":
            self.led.blink(args[0], args[1])
        else:
            on, off, *n = args
            self.led.blink(on, off, n=int(n[0]) if n else None)

    def _show_strip(
        self, strip: Apa102Strip, state: State, fault: bool, problem: str | None
    ) -> None:
        """The same patterns and colours as an RGB LED, animated by the strip's thread."""
        if fault:
            state, problem = State.ERROR, None
        pattern, args = PROBLEM_PATTERNS[problem] if problem else PATTERNS[state]
        if fault:
            args = args[:2]
        bright = self.led_settings.brightness
        r, g, b = PROBLEM_COLORS[problem] if problem else self.colours[state]
        strip.show(pattern, args, (r * bright, g * bright, b * bright))

    def off(self) -> None:
        if self.led is not None:
            self.led.off()
            self._shown = None

    def close(self) -> None:
        for dev in (self.button, self.switch, self.led):
            if dev is not None:
                try:
                    dev.close()
                except Exception:  # closing half-built devices must not fail shutdown
                    log.debug("closing GPIO device failed", exc_info=True)
        self.button = self.switch = self.led = None
        self.available = False


def _flashes(
    count: int, on: float, off: float, period: float, level: Any, dark: Any
) -> Iterator[Any]:
    """``count`` flashes of ``on`` seconds ``off`` apart, every ``period`` seconds, as
    values one :data:`FLASH_TICK_S` apart (gpiozero's ``source``; its blink cannot group)."""
    ticks = [level] * round(on / FLASH_TICK_S) + [dark] * round(off / FLASH_TICK_S)
    seq = ticks * count
    seq += [dark] * max(0, round(period / FLASH_TICK_S) - len(seq))
    return itertools.cycle(seq)


def show_error(led: LedSettings, pin_factory: Any = None, pause_s: float = 1.0) -> bool:
    """Before `agentd run` exits on a config or key error: the error pattern on the LED,
    ``ERROR_BLINKS`` times (no event loop runs yet; the button is not bound)."""
    no_button = ButtonSettings(pin=None)
    gpio = Gpio(no_button, led, asyncio.new_event_loop(), lambda _: None, pin_factory)
    try:
        if not gpio.start(quiet=True):
            return False
        for _ in range(ERROR_BLINKS):
            gpio.show(State.ERROR)
            time.sleep(pause_s)
            gpio.off()
        return True
    finally:
        gpio.close()
        gpio.loop.close()
