"""What `agentd check-config` prints: the one-line summary and, with ``--show``, the
effective config with the file each value came from, secrets redacted."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import yaml

from agentd.config.loading import Loaded, origin_of
from agentd.config.schema import Config
from agentd.realtime import dialects

SECRET_KEYS = ("api.api_key", "api.headers")
REDACTED = "'***'"


def summary(cfg: Config) -> str:
    """The one line `agentd check-config` prints (and the daemon logs at start)."""
    return (
        f"dialect={cfg.api.dialect} model={dialects.model(cfg.api)} user_id={cfg.device.user_id} "
        f"turn={cfg.turn.mode}/{cfg.turn.detection} "
        f"mic={cfg.audio.input.device}@{cfg.audio.input.rate} "
        f"speaker={cfg.audio.output.device}@{cfg.audio.output.rate}"
    )


def show(loaded: Loaded) -> str:
    """`agentd check-config --show`: the effective config as YAML, each value with the file it
    came from (or "default"); the key and every handshake header value are redacted."""
    lines: list[tuple[str, str]] = []

    def scalar(value: Any) -> str:
        if isinstance(value, tuple):
            value = list(value)
        text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6)
        return text.removesuffix("\n...\n").strip()

    def source(key: str) -> str:
        found = loaded.origins.get(key)
        if found is None and "[" in key:  # inside a list (agent.tools[0].name): the list's file
            found = origin_of(re.sub(r"\[\d+\]", "", key), loaded.origins)
        return str(found) if found is not None else "default"

    def secret(key: str) -> bool:
        """The key, handshake headers, and a tool's headers (agent.tools[i].headers)."""
        return key in SECRET_KEYS or re.fullmatch(r"agent\.tools\[\d+\]\.headers", key) is not None

    def walk(obj: Any, prefix: str, indent: str) -> None:
        for f in dataclasses.fields(obj):
            key, value = f"{prefix}{f.name}", getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                lines.append((f"{indent}{f.name}:", ""))
                walk(value, key + ".", indent + "  ")
            elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
                lines.append((f"{indent}{f.name}:", ""))  # agent.tools: one block per entry
                for i, entry in enumerate(value):
                    lines.append((f"{indent}  - # [{i}]", ""))
                    walk(entry, f"{key}[{i}].", indent + "    ")
            elif isinstance(value, dict) and value:
                lines.append((f"{indent}{f.name}:", ""))
                for name, inner in value.items():
                    shown = REDACTED if secret(key) else scalar(inner)
                    lines.append((f"{indent}  {name}: {shown}", source(f"{key}.{name}")))
            else:
                shown = REDACTED if secret(key) and value not in (None, {}) else scalar(value)
                lines.append((f"{indent}{f.name}: {shown}", source(key)))

    walk(loaded.config, "", "")
    width = min(max(len(text) for text, _ in lines), 46)
    out = [f"{text:<{width}}  # {src}" if src else text for text, src in lines]
    key = loaded.api_key.source if loaded.api_key is not None else "none (not needed or not found)"
    out.append(f"# api key: {key}")
    return "\n".join(out)
