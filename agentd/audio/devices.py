"""What ALSA PCMs exist, for `agentd devices` and for errors that name a missing device.

Cards are listed by their stable names (``plughw:CARD=<id>,DEV=<n>``): card numbers change
when a USB card is plugged in or a HAT's overlay loads first, card ids do not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

HW_NAME = re.compile(r"^hw:CARD=(?P<card>[^,]+),DEV=(?P<dev>\d+)$")
#: per-card variants ALSA lists beside hw: (the plughw: line replaces them all)
CARD_VARIANTS = re.compile(r"^\w+:CARD=")


@dataclass(frozen=True)
class PcmInfo:
    name: str


@dataclass(frozen=True)
class Card:
    index: int
    id: str  # the stable name: CARD=<id>
    name: str
    longname: str


def list_pcms(kind: str) -> list[PcmInfo]:
    """ALSA PCM names for ``kind`` 'capture' or 'playback' (empty when ALSA has none)."""
    import alsaaudio

    pcm_type = alsaaudio.PCM_CAPTURE if kind == "capture" else alsaaudio.PCM_PLAYBACK
    try:
        names = alsaaudio.pcms(pcm_type)
    except alsaaudio.ALSAAudioError:
        return []
    return [PcmInfo(n) for n in names]


def list_cards() -> list[Card]:
    """Sound cards with their ids and descriptions (what /proc/asound/cards shows)."""
    import alsaaudio

    try:
        indexes, ids = alsaaudio.card_indexes(), alsaaudio.cards()
    except alsaaudio.ALSAAudioError:
        return []
    cards = []
    for index, card_id in zip(indexes, ids, strict=False):
        try:
            name, longname = alsaaudio.card_name(index)
        except alsaaudio.ALSAAudioError:
            name = longname = ""
        cards.append(Card(index, card_id, name, longname))
    return cards


def format_devices(
    cards: Sequence[Card],
    pcms: Mapping[str, Sequence[str]],
    capabilities: Callable[[str, str], str] = lambda device, kind: "",
) -> str:
    """The text `agentd devices` prints: per direction, one pasteable stable name per card
    device with the card's description, then the other PCMs the ALSA configuration defines."""
    by_id = {c.id: c for c in cards}
    lines = ["Sound cards: " + (", ".join(c.id for c in cards) if cards else "none found")]
    for kind, key in (("capture", "audio.input.device"), ("playback", "audio.output.device")):
        lines.append(f"\n{kind.capitalize()} (paste the name into {key}):")
        hw = [m for m in (HW_NAME.match(n) for n in pcms.get(kind, ())) if m]
        if not hw:
            lines.append("  (no sound card device)")
        rows = []
        for m in hw:
            card = by_id.get(m["card"])
            desc = (card.longname or card.name) if card else ""
            name = f"plughw:CARD={m['card']},DEV={m['dev']}"
            caps = capabilities(f"hw:CARD={m['card']},DEV={m['dev']}", kind)
            rows.append((name, "; ".join(x for x in (desc, caps) if x)))
        width = max((len(n) for n, _ in rows), default=0) + 2
        lines += [f"  {n:<{width}}{d}".rstrip() for n, d in rows]
        other = [n for n in pcms.get(kind, ()) if not CARD_VARIANTS.match(n)]
        if other:
            lines.append("  other PCMs from the ALSA configuration: " + ", ".join(other))
    from agentd.device.presets import CARD_PRESETS

    for card in cards:
        if card.id in CARD_PRESETS:
            lines.append(f"\n{card.id} is a voice HAT: set hardware: {CARD_PRESETS[card.id]}")
    if not cards:
        lines.append(
            "\nNo sound card was found: plug in a USB sound card or enable an audio HAT, "
            "then set audio.input.device / audio.output.device."
        )
    return "\n".join(lines)


def describe_devices() -> str:
    """`agentd devices` on this machine's ALSA."""
    pcms = {kind: [p.name for p in list_pcms(kind)] for kind in ("capture", "playback")}
    return format_devices(list_cards(), pcms, hw_capabilities)


def hw_capabilities(device: str, kind: str) -> str:
    """Rates and channel counts a hardware PCM accepts, as ALSA reports them ('' if busy)."""
    import alsaaudio

    pcm_type = alsaaudio.PCM_CAPTURE if kind == "capture" else alsaaudio.PCM_PLAYBACK
    try:
        pcm = alsaaudio.PCM(pcm_type, alsaaudio.PCM_NONBLOCK, device=device)
    except alsaaudio.ALSAAudioError as exc:
        return f"cannot open ({exc})"
    try:
        rates = pcm.getrates()
        channels = pcm.getchannels()
    except alsaaudio.ALSAAudioError:
        return ""
    finally:
        pcm.close()
    rate_text = (
        f"{rates[0]}-{rates[1]} Hz"
        if isinstance(rates, tuple)
        else ", ".join(str(r) for r in rates) + " Hz"
        if isinstance(rates, list)
        else f"{rates} Hz"
    )
    return f"rates {rate_text}; channels {', '.join(str(c) for c in channels)}"
