"""Header values of tools: inline, or read at run time from a file, a systemd credential or
an environment variable; every value is registered with the log redaction before use."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentd import logs

#: where credentials are looked for outside the unit (the unit's LoadCredential= sources)
CREDENTIALS_FALLBACK = Path("/etc/agentd/credentials")


class HeaderError(Exception):
    """A header's secret cannot be read: says which, never the value."""


def resolve(spec: Any, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if isinstance(spec, str):
        value = spec
    else:
        ((source, ref),) = dict(spec).items()
        try:
            if source == "env":
                value = env[ref]
            elif source == "credential":
                base = env.get("CREDENTIALS_DIRECTORY")
                value = (Path(base) if base else CREDENTIALS_FALLBACK).joinpath(ref).read_text()
            else:
                value = Path(ref).read_text()
        except KeyError:
            raise HeaderError(f"environment variable {ref} is not set") from None
        except OSError as exc:
            raise HeaderError(f"cannot read {source} {ref}: {exc.strerror or exc}") from None
        value = value.strip()
    logs.register_secret(value)
    return value


def resolve_all(headers: Mapping[str, Any]) -> dict[str, str]:
    return {name: resolve(spec) for name, spec in headers.items()}
