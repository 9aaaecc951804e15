"""What survives a restart: whether the microphone is muted, and the speaker volume.

Kept as a marker file in ``$STATE_DIRECTORY`` (systemd's ``StateDirectory=agentd``, i.e.
``/var/lib/agentd`` under the unit), else in ``$XDG_STATE_HOME/agentd`` (by default
``~/.local/state/agentd``) for a daemon run by hand. A file that cannot be written costs one
warning, never the daemon.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("agentd.state")

MUTED_FILE = "muted"
VOLUME_FILE = "volume"


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])  # systemd lists one per entry
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "agentd"


class Persisted:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.muted_file = directory / MUTED_FILE

    def muted(self) -> bool:
        return self.muted_file.exists()

    def set_muted(self, muted: bool) -> None:
        try:
            if muted:
                self.directory.mkdir(parents=True, exist_ok=True)
                self.muted_file.write_text("muted: the microphone stays off after a restart\n")
            else:
                self.muted_file.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot keep the mute state in %s: %s", self.directory, exc)

    def volume(self) -> int | None:
        """The volume `ctl volume` last set (0..100), or None."""
        try:
            level = int((self.directory / VOLUME_FILE).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return level if 0 <= level <= 100 else None

    def set_volume(self, level: int) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / VOLUME_FILE).write_text(f"{level}\n")
        except OSError as exc:
            log.warning("cannot keep the volume in %s: %s", self.directory, exc)
