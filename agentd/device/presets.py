"""Board presets (`hardware:`): what each voice HAT needs, as a config layer under the owner's.

A preset is plain config data (the same keys a person writes), merged *under* the files, so
every value it sets can be overridden by writing that key, and `check-config --show` names
the preset as the source of each value it set. Pure: no I/O.

Sound cards are named by card id (``plughw:CARD=<id>,DEV=0``): stable across reboots and
USB re-plugging, unlike card numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

_WM8960_CAPTURE = {"rate": 48000, "channels": 2, "channel": 0}
_WM8960_PLAYBACK = {"rate": 48000, "channels": 2, "mixer": "Playback"}


def _card(card_id: str) -> str:
    return f"plughw:CARD={card_id},DEV=0"


#: preset name → config mapping (the keys of DESIGN.md §3)
PRESETS: dict[str, dict[str, Any]] = {
    # Seeed ReSpeaker 2-Mics Pi HAT v1 (WM8960): button GPIO17, 3 APA102 on SPI0 (MOSI 10, SCLK 11)
    "respeaker-2mic": {
        "audio": {
            "input": {"device": _card("seeed2micvoicec"), **_WM8960_CAPTURE},
            "output": {"device": _card("seeed2micvoicec"), **_WM8960_PLAYBACK},
        },
        "button": {"pin": 17, "pull_up": True},
        "led": {"kind": "apa102", "pin": None, "count": 3, "spi": {"bus": 0, "device": 1}},
    },
    # Adafruit Voice Bonnet (WM8960): button GPIO17, 3 DotStars on GPIO5 (data) / GPIO6 (clock)
    "voice-bonnet": {
        "audio": {
            "input": {"device": _card("wm8960soundcard"), **_WM8960_CAPTURE},
            "output": {"device": _card("wm8960soundcard"), **_WM8960_PLAYBACK},
        },
        "button": {"pin": 17, "pull_up": True},
        "led": {
            "kind": "apa102",
            "pin": None,
            "count": 3,
            "spi": {"clock_pin": 6, "mosi_pin": 5},
        },
    },
    # Google AIY Voice HAT v1 (googlevoicehat-soundcard): button GPIO23, button LED GPIO25;
    # the codec has no volume control, so the volume is a software gain
    "aiy-voice": {
        "audio": {
            "input": {"device": _card("sndrpigooglevoi"), "rate": 48000, "channels": 2},
            "output": {
                "device": _card("sndrpigooglevoi"),
                "rate": 48000,
                "channels": 2,
                "mixer": None,
            },
        },
        "button": {"pin": 23, "pull_up": True},
        "led": {"kind": "gpio", "pin": 25, "active_high": True},
    },
    # A USB speakerphone (Jabra, Anker, eMeet …): mono, cancels its own echo, no GPIO
    "usb-speakerphone": {
        "audio": {
            "input": {"device": _card("Device"), "rate": 48000, "channels": 1},
            "output": {"device": _card("Device"), "rate": 48000, "channels": 1, "mixer": "auto"},
        },
        "echo": {"mode": "off"},
        "button": {"pin": None},
        "led": {"pin": None},
    },
}

#: card id → preset, for `agentd devices` (the mainline WM8960 overlay names both boards'
#: card wm8960soundcard)
CARD_PRESETS: dict[str, str] = {
    "seeed2micvoicec": "respeaker-2mic",
    "wm8960soundcard": "voice-bonnet (a ReSpeaker 2-Mics HAT on the mainline overlay: "
    "respeaker-2mic with its audio devices set to this card)",
    "sndrpigooglevoi": "aiy-voice",
}


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` → ``("a.b", 1)``: the dotted keys a preset sets."""
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def source(name: str) -> str:
    """What `check-config --show` prints as the origin of a preset's value."""
    return f"hardware: {name}"
