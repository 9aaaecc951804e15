"""``builtin`` tools: what the device itself can do. Reading ones run here; the ones that
change the device go through :class:`Device` (the daemon), one small method each."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, Protocol

from agentd.tools.registry import error_output


class Device(Protocol):
    """What the builtins may touch: the daemon implements it."""

    def device_status(self) -> dict[str, Any]: ...

    def output_volume(self) -> float: ...

    def set_output_volume(self, level: float) -> None: ...


#: builtins whose effect the conversation carries out after their output is sent
EFFECTS = {"mute": "mute", "end_conversation": "end"}


def now_text(now: dt.datetime | None = None) -> str:
    t = now or dt.datetime.now().astimezone()
    return json.dumps(
        {
            "date": t.strftime("%A %d %B %Y"),
            "time": t.strftime("%H:%M"),
            "time_zone": t.tzname() or "",
            "iso": t.isoformat(timespec="seconds"),
        }
    )


def run_builtin(name: str, args: Mapping[str, Any], device: Device) -> tuple[str, str]:
    """(output for the model, status for the log)."""
    match name:
        case "get_time":
            return now_text(), "ok"
        case "get_status":
            return json.dumps(device.device_status()), "ok"
        case "set_volume":
            level = int(args["percent"]) / 100
            before = device.output_volume()
            device.set_output_volume(level)
            return json.dumps(
                {"volume_percent": round(level * 100), "was": round(before * 100)}
            ), "ok"
        case "mute":
            return json.dumps({"muted": True}), "ok"
        case "end_conversation":
            return json.dumps({"ended": True}), "ok"
    return error_output(f"unknown builtin {name!r}"), "unknown"
