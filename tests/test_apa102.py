"""APA102/DotStar LEDs (issue 24, point 2): the exact bytes on the SPI wire, read back bit by
bit by gpiozero's mock SPI device on MockFactory pins — hardware SPI0 CE1 as on the ReSpeaker
2-Mics HAT, and bit-banged GPIO5/GPIO6 as on the Voice Bonnet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockSPIDevice

from agentd.config import ButtonSettings, LedSettings, from_mapping
from agentd.conversation import Problem, State
from agentd.device import apa102
from agentd.device.gpio import Gpio


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()  # plain pins: the mock SPI pins are not PWM pins
    yield f
    Device.pin_factory = None
    f.reset()


def wire(dev: MockSPIDevice) -> bytes:
    """Every byte the LEDs were sent, from the bits the mock device clocked in."""
    bits = [int(b) for b in dev.rx_buf]
    return bytes(
        int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits) // 8 * 8, 8)
    )


def last_frame(dev: MockSPIDevice, count: int = 3) -> bytes:
    """The frame on the wire; b"" while one is half sent (the mock device starts a new
    buffer each time the select line goes active)."""
    n = 4 + 4 * count + (count + 15) // 16
    data = wire(dev)
    return data[-n:] if len(data) >= n else b""


def whole_frame(dev: MockSPIDevice) -> bytes:
    deadline = time.monotonic() + 1.0
    while not (frame := last_frame(dev)):
        assert time.monotonic() < deadline, "no whole frame on the wire"
        time.sleep(0.002)
    return frame


def expect(r: float, g: float, b: float, count: int = 3) -> bytes:
    led = bytes((0xFF, round(b * 255), round(g * 255), round(r * 255)))
    return b"\0" * 4 + led * count + b"\0" * ((count + 15) // 16)


def strip_gpio(factory: MockFactory, **led: Any) -> Gpio:
    settings = from_mapping({"led": {"kind": "apa102", "pin": None, **led}}).led
    g = Gpio(ButtonSettings(pin=None), settings, asyncio.new_event_loop(), lambda _: None, factory)
    assert g.start(), g.error
    return g


def until(pred: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_frame_layout() -> None:
    assert apa102.frame([(1.0, 0.0, 0.0)]) == b"\0\0\0\0" + b"\xff\x00\x00\xff" + b"\0"
    assert apa102.frame([(0.0, 0.5, 1.0)] * 17)[4:8] == b"\xff\xff\x80\x00"
    assert len(apa102.frame([(0, 0, 0)] * 17)) == 4 + 68 + 2  # end frame: a bit per LED / 2


@pytest.mark.parametrize(
    ("pattern", "args", "t", "value", "wait"),
    [
        ("solid", (), 5.0, 1.0, None),
        ("dim", (0.05,), 5.0, 1.0, None),
        ("blink", (0.2, 1.8), 0.1, 1.0, 0.1),
        ("blink", (0.2, 1.8), 1.0, 0.0, 1.0),
        ("blink", (0.08, 0.12, 3), 0.7, 0.0, None),  # three blinks, then dark for good
        ("pulse", (0.8, 0.8), 0.8, 1.0, 0.0),
        ("pulse", (0.8, 0.8), 0.0, 0.0, 0.0),
        ("flashes", (2, 0.15, 0.15, 2.0), 0.35, 1.0, 0.1),
        ("flashes", (2, 0.15, 0.15, 2.0), 1.0, 0.0, 1.0),
    ],
)
def test_pattern_levels(
    pattern: str, args: tuple[float, ...], t: float, value: float, wait: float | None
) -> None:
    got, nxt = apa102.level(pattern, args, t)
    assert got == pytest.approx(value)
    assert nxt == (None if wait is None else pytest.approx(wait))


def test_respeaker_hardware_spi_bytes_for_each_state(factory: MockFactory) -> None:
    """SPI port 0 device 1 is SCLK 11, MOSI 10, CE1 7: the mock device there reads the frames."""
    dev = MockSPIDevice(11, 10, 9, 7, pin_factory=factory)
    g = strip_gpio(factory, count=3, spi={"bus": 0, "device": 1}, brightness=0.5)
    try:
        g.show(State.LISTENING)
        until(lambda: last_frame(dev) == expect(0, 0.5, 0))
        g.show(State.IDLE)  # dim: the idle colour at the brightness
        until(lambda: last_frame(dev) == expect(0, 0, 0.025))
        g.show(State.MUTED)  # the muted pattern blinks magenta
        until(lambda: last_frame(dev) == expect(0.5, 0, 0.5))
        until(lambda: last_frame(dev) == expect(0, 0, 0))
        g.show(State.OFFLINE, problem=Problem.AUTH)  # two red flashes
        until(lambda: last_frame(dev) == expect(0.5, 0, 0))
    finally:
        g.close()
    assert last_frame(dev) == expect(0, 0, 0)  # closing leaves the LEDs dark


def test_voice_bonnet_software_spi_and_configured_colours(factory: MockFactory) -> None:
    dev = MockSPIDevice(6, 5, None, 26, pin_factory=factory)  # 26: an unused select
    g = strip_gpio(
        factory, count=3, spi={"clock_pin": 6, "mosi_pin": 5}, colors={"listening": "#ff8000"}
    )
    try:
        g.show(State.LISTENING)
        until(lambda: last_frame(dev) == expect(1.0, 128 / 255, 0))
    finally:
        g.close()


def test_fades_animate_and_steady_states_send_nothing(factory: MockFactory) -> None:
    """Thinking pulses: many different frames, at most FPS a second. Listening is steady: one
    frame, then nothing at all (no CPU spent on a light that does not change)."""
    dev = MockSPIDevice(11, 10, 9, 8, pin_factory=factory)
    g = strip_gpio(factory, count=3)
    strip = g.led
    assert isinstance(strip, apa102.Apa102Strip)
    try:
        g.show(State.THINKING)
        time.sleep(0.2)
        f0, t0 = strip.frames, time.monotonic()
        time.sleep(1.0)
        sent, dt = strip.frames - f0, time.monotonic() - t0
        assert 8 <= sent <= apa102.FPS * dt + 2, sent
        blues = {whole_frame(dev)[5] for _ in range(20) if not time.sleep(0.04)}  # LED 0 blue
        assert len(blues) >= 5  # it really fades
        g.show(State.LISTENING)
        until(lambda: last_frame(dev) == expect(0, 1, 0))
        steady = strip.frames
        time.sleep(0.5)
        assert strip.frames == steady
    finally:
        g.close()


def test_apa102_settings_are_checked() -> None:
    from agentd.config import ConfigError

    with pytest.raises(ConfigError) as e:
        from_mapping(
            {"led": {"kind": "apa102", "pin": None, "spi": {"clock_pin": 6}, "colors": {"x": "1"}}}
        )
    assert e.value.problems == [
        "led.spi: software SPI needs both clock_pin and mosi_pin",
        "led.colors.x: unknown state (use idle, listening, thinking, speaking, offline, error, "
        "muted)",
    ]
    assert LedSettings().kind == "gpio"  # the single LED stays the default
