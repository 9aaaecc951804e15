"""CPU the APA102 LED animation costs, per state (issue 24: smooth animation without CPU burn).

The strip's thread runs each state's pattern for a few seconds while the main thread sleeps;
the process CPU time over that wall time is the animation's cost. Two SPI paths:
- hardware SPI (ReSpeaker 2-Mics HAT): the frames go to an SPI sink that takes the words, so
  the figure is agentd's own work per frame (the kernel's spidev write is not included);
- software SPI (Voice Bonnet, GPIO5/6 bit-banged by gpiozero) on MockFactory pins: an upper
  bound for the bit-banging in Python (mock pins do more per write than lgpio).
Prints frames/s and CPU % of one core per state. `LED_BENCH_S` sets the seconds per state.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentd.config import from_mapping
from agentd.conversation import State
from agentd.device import apa102
from agentd.device.gpio import COLORS, PATTERNS

SECONDS = float(os.environ.get("LED_BENCH_S", "3"))
STATES = (State.IDLE, State.LISTENING, State.THINKING, State.SPEAKING, State.OFFLINE, State.MUTED)


class SpiSink:
    """Takes frames like /dev/spidev would (gpiozero's SPI interface: transfer, close)."""

    def __init__(self) -> None:
        self.bytes = 0

    def transfer(self, words: list[int]) -> list[int]:
        self.bytes += len(words)
        return [0] * len(words)

    def close(self) -> None:
        pass


class SinkFactory:
    def spi(self, **_: Any) -> SpiSink:
        return SpiSink()


def measure(strip: apa102.Apa102Strip) -> dict[str, dict[str, float]]:
    out = {}
    for state in STATES:
        pattern, args = PATTERNS[state]
        strip.show(pattern, args, COLORS[state])
        time.sleep(0.2)
        f0, c0, t0 = strip.frames, time.process_time(), time.monotonic()
        time.sleep(SECONDS)
        dt = time.monotonic() - t0
        out[state.value] = {
            "fps": (strip.frames - f0) / dt,
            "cpu_pct": (time.process_time() - c0) / dt * 100,
        }
    return out


def main() -> dict[str, float]:
    led = from_mapping({"led": {"kind": "apa102", "pin": None, "count": 3}}).led
    hw = apa102.Apa102Strip(led, SinkFactory())
    hard = measure(hw)
    hw.close()

    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    Device.pin_factory = factory
    soft_led = from_mapping(
        {"led": {"kind": "apa102", "pin": None, "count": 3, "spi": {"clock_pin": 6, "mosi_pin": 5}}}
    ).led
    sw = apa102.Apa102Strip(soft_led, factory)
    soft = measure(sw)
    sw.close()

    print(f"{'state':<10} {'hw fps':>7} {'hw CPU %':>9} {'sw fps':>7} {'sw CPU %':>9}")
    for state in STATES:
        h, s = hard[state.value], soft[state.value]
        print(
            f"{state.value:<10} {h['fps']:7.1f} {h['cpu_pct']:9.2f} {s['fps']:7.1f} "
            f"{s['cpu_pct']:9.2f}"
        )
    steady = [State.IDLE.value, State.LISTENING.value]
    return {
        "hw_cpu_max_pct": max(v["cpu_pct"] for v in hard.values()),
        "sw_cpu_max_pct": max(v["cpu_pct"] for v in soft.values()),
        "fade_fps": hard[State.THINKING.value]["fps"],
        "steady_fps": max(hard[s]["fps"] for s in steady),
    }


if __name__ == "__main__":
    print(main())
