"""``{hostname}`` and ``{machine_id}`` in ``device.user_id``: one config file for a fleet,
a distinct user id (and server-side memory) per device."""

from __future__ import annotations

import hashlib
import hmac
import socket
from pathlib import Path

#: agentd's application id for machine-id(5) app-specific ids: fixed forever, so a device
#: keeps its user id (and the server-side memory keyed on it) across reinstalls.
APP_ID = "6eaa1fd1ef4241c19bbb3a0e4347c7ee"
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def _raw_machine_id() -> str | None:
    """The machine id (32 hex digits), or None when this system has none."""
    for candidate in MACHINE_ID_FILES:
        try:
            text = Path(candidate).read_text().strip().lower()
        except OSError:
            continue
        if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
            return text
    return None


def app_specific_id(machine_id: str, app_id: str = APP_ID) -> str:
    """What ``sd_id128_get_machine_app_specific()`` (and ``systemd-id128 machine-id
    --app-specific=APP``) returns: HMAC-SHA256 keyed with the machine id over the app id, cut
    to 128 bits and marked as a v4 UUID. machine-id(5): the raw id must never leave the
    machine, and this one cannot be turned back into it or matched with other apps' ids."""
    digest = hmac.new(bytes.fromhex(machine_id), bytes.fromhex(app_id), hashlib.sha256).digest()
    out = bytearray(digest[:16])
    out[6] = (out[6] & 0x0F) | 0x40
    out[8] = (out[8] & 0x3F) | 0x80
    return out.hex()


def machine_id() -> str | None:
    """The value of the ``{machine_id}`` placeholder: agentd's app-specific id."""
    raw = _raw_machine_id()
    return app_specific_id(raw) if raw else None


def expand_user_id(template: str, problems: list[str]) -> str:
    """``template`` with its placeholders filled in; a problem appended for each one that
    cannot be (the template is then returned unchanged)."""
    values = {"hostname": socket.gethostname()}
    if "machine_id" in template:
        found = machine_id()
        if found is None:
            problems.append(
                "device.user_id: {machine_id} needs a machine id, but "
                f"{' and '.join(MACHINE_ID_FILES)} are missing or invalid "
                "(run systemd-machine-id-setup, or use {hostname} or a fixed user_id)"
            )
            return template
        values["machine_id"] = found
    try:
        result = template.format_map(values)
    except KeyError as exc:
        problems.append(
            f"device.user_id: unknown placeholder {{{exc.args[0]}}} "
            "(use {hostname} or {machine_id})"
        )
        return template
    except (ValueError, IndexError) as exc:
        problems.append(f"device.user_id: bad placeholder syntax: {exc} (got {template!r})")
        return template
    if not result.strip():
        problems.append("device.user_id: must not be empty")
    return result
