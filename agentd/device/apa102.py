"""APA102 / DotStar RGB LEDs on SPI (ReSpeaker 2-Mics HAT, Adafruit Voice Bonnet).

Pure part: :func:`frame` (colours → the bytes on the wire) and :func:`level` (a pattern's
brightness at time t, and when it next changes). I/O part: :class:`Apa102Strip`, which writes
frames through gpiozero's SPI interface (hardware ``/dev/spidev<bus>.<device>`` on a Pi, or
bit-banged on two GPIOs; gpiozero's MockFactory records the bits in tests) from one thread.

No CPU burn: a steady or blinking pattern sleeps until its next edge and sends nothing in
between; only fades render frames, at most :data:`FPS` a second, and a frame identical to the
last one is not sent.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from agentd.config import LedSettings

FPS = 25  # frames a second while fading (hardware SPI); software SPI: SOFT_FPS
SOFT_FPS = 12  # bit-banged SPI costs ~1 ms a frame in Python: fewer frames
GLOBAL = 0xE0 | 31  # each LED's first byte: 0b111 + 5-bit global brightness (full)
Rgb = tuple[float, float, float]


def frame(colours: list[Rgb]) -> bytes:
    """APA102 frame: 4 zero bytes, per LED (0xE0|brightness, blue, green, red), then
    (n + 15) // 16 zero bytes so the last LED's data is clocked through the chain."""
    out = bytearray(4)
    for r, g, b in colours:
        out += bytes((GLOBAL, _byte(b), _byte(g), _byte(r)))
    out += bytes((len(colours) + 15) // 16)
    return bytes(out)


def _byte(x: float) -> int:
    return max(0, min(255, round(x * 255)))


def level(pattern: str, args: tuple[float, ...], t: float) -> tuple[float, float | None]:
    """(brightness 0..1 of ``pattern`` at ``t`` seconds after it started, seconds until it
    can next change or None for never). Patterns and arguments are gpio.PATTERNS'."""
    if pattern in ("dim", "solid"):
        return 1.0, None  # the colour carries the dimness (as on an RGB LED)
    if pattern == "pulse":  # a smooth rise over fade_in, fall over fade_out
        rise, fall = args
        p = t % (rise + fall)
        x = p / rise if p < rise else 1 - (p - rise) / fall
        return 0.5 - 0.5 * math.cos(math.pi * x), 0.0
    if pattern == "blink":
        on, off, *n = args
        cycle = on + off
        if n and t >= n[0] * cycle:
            return 0.0, None
        p = t % cycle
        return (1.0, on - p) if p < on else (0.0, cycle - p)
    if pattern == "flashes":
        count, on, off, period = args
        p = t % period
        k = int(p // (on + off))
        if k >= count:
            return 0.0, period - p
        q = p - k * (on + off)
        return (1.0, on - q) if q < on else (0.0, on + off - q)
    raise ValueError(f"unknown LED pattern {pattern!r}")


class Apa102Strip:
    """The chained LEDs, all showing one colour and pattern; driven from its own thread."""

    def __init__(
        self, settings: LedSettings, factory: Any, clock: Callable[[], float] = time.monotonic
    ) -> None:
        from gpiozero import Device
        from gpiozero.pins.spi import SPISoftwareBus

        if Device.pin_factory is None:  # gpiozero's software SPI bus looks only there
            Device.pin_factory = factory
        self.count = settings.count
        self.clock = clock
        spi = settings.spi
        self._bus: Any = None
        self._spi: Any = None
        if spi.clock_pin is not None:
            self._bus = SPISoftwareBus(spi.clock_pin, spi.mosi_pin, None, pin_factory=factory)
            self.fps = SOFT_FPS
        else:
            self._spi = factory.spi(port=spi.bus, device=spi.device)
            self.fps = FPS
        self.frames = 0  # frames sent (the bench counts them)
        self._sent: bytes | None = None
        self._look: tuple[str, tuple[float, ...], Rgb] = ("solid", (), (0.0, 0.0, 0.0))
        self._since = clock()
        self._changed = threading.Event()
        self._closing = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="agentd-apa102", daemon=True)
        self._thread.start()

    def show(self, pattern: str, args: tuple[float, ...], colour: Rgb) -> None:
        with self._lock:
            self._look = (pattern, args, colour)
            self._since = self.clock()
        self._changed.set()

    def off(self) -> None:
        self.show("solid", (), (0.0, 0.0, 0.0))

    def _run(self) -> None:
        while not self._closing:
            self._changed.clear()
            with self._lock:
                pattern, args, colour = self._look
                t = self.clock() - self._since
            value, wait = level(pattern, args, t)
            r, g, b = colour
            self._write(frame([(r * value, g * value, b * value)] * self.count))
            if wait is not None:
                wait = max(wait, 1 / self.fps)
            self._changed.wait(wait)

    def _write(self, data: bytes) -> None:
        if data == self._sent:
            return
        words = list(data)
        if self._bus is not None:
            self._bus.transfer(words)
        else:
            self._spi.transfer(words)
        self._sent = data
        self.frames += 1

    def close(self) -> None:
        """All LEDs dark, then the SPI interface released."""
        self._closing = True
        self._changed.set()
        self._thread.join(1.0)
        try:
            self._sent = None
            self._write(frame([(0.0, 0.0, 0.0)] * self.count))
        finally:
            for dev in (self._spi, self._bus):
                if dev is not None:
                    dev.close()
