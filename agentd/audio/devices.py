"""What ALSA PCMs exist, for `agentd devices` and for errors that name a missing device."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PcmInfo:
    name: str
    description: str


def _describe(name: str) -> str:
    # pyalsaaudio has no description API; ALSA's hints are what `arecord -L` prints.
    return ""


def list_pcms(kind: str) -> list[PcmInfo]:
    """ALSA PCM names for ``kind`` 'capture' or 'playback' (empty when ALSA has none)."""
    import alsaaudio

    pcm_type = alsaaudio.PCM_CAPTURE if kind == "capture" else alsaaudio.PCM_PLAYBACK
    try:
        names = alsaaudio.pcms(pcm_type)
    except alsaaudio.ALSAAudioError:
        return []
    return [PcmInfo(n, _describe(n)) for n in names]


def list_cards() -> list[str]:
    import alsaaudio

    try:
        return list(alsaaudio.cards())
    except alsaaudio.ALSAAudioError:
        return []


def format_devices() -> str:
    """The text `agentd devices` prints."""
    lines: list[str] = []
    cards = list_cards()
    lines.append("Sound cards: " + (", ".join(cards) if cards else "none found (no sound card)"))
    for kind in ("capture", "playback"):
        pcms = list_pcms(kind)
        lines.append(f"\n{kind.capitalize()} PCMs:")
        if not pcms:
            lines.append("  (none)")
        for p in pcms:
            lines.append(f"  {p.name}" + (f"\n      {p.description}" if p.description else ""))
        for card in range(len(cards)):
            caps = hw_capabilities(f"hw:{card},0", kind)
            if caps:
                lines.append(f"  hw:{card},0 ({cards[card]}): {caps}")
    if not cards:
        lines.append(
            "\nNo sound card was found: plug in a USB sound card or enable an audio HAT, "
            "then set audio.input.device / audio.output.device."
        )
    return "\n".join(lines)


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
