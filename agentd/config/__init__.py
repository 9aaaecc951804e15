"""YAML configuration → frozen settings dataclasses, with exact error paths.

Split by concern: :mod:`~agentd.config.schema` (the settings, data only),
:mod:`~agentd.config.validate` (every problem at once, "did you mean"),
:mod:`~agentd.config.loading` (files, ``config.d`` overlays, provenance),
:mod:`~agentd.config.placeholders` (``{hostname}``, ``{machine_id}``),
:mod:`~agentd.config.secrets` (the API key and log redaction) and
:mod:`~agentd.config.show` (what `check-config` prints). The dialects' wire facts (default
URLs, format names, rates) live with the codecs in :mod:`agentd.realtime.dialects`.

Callers import from here: ``from agentd.config import Config, load, ConfigError``.
"""

from agentd.config.loading import DEFAULT_CONFIG_PATH, Loaded, from_mapping, led_config, load
from agentd.config.schema import (
    AgentSettings,
    ApiSettings,
    AudioSettings,
    ButtonSettings,
    Config,
    ControlSettings,
    CueFiles,
    DeviceSettings,
    EchoSettings,
    InputSettings,
    LedSettings,
    LoggingSettings,
    MuteSwitchSettings,
    OutputSettings,
    ReconnectSettings,
    RecordingSettings,
    RgbPins,
    SoundSettings,
    TurnSettings,
    VadSettings,
    WakeSettings,
)
from agentd.config.secrets import Secret, register_secrets
from agentd.config.show import show, summary
from agentd.config.validate import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AgentSettings",
    "ApiSettings",
    "AudioSettings",
    "ButtonSettings",
    "Config",
    "ConfigError",
    "ControlSettings",
    "CueFiles",
    "DeviceSettings",
    "EchoSettings",
    "InputSettings",
    "LedSettings",
    "Loaded",
    "LoggingSettings",
    "MuteSwitchSettings",
    "OutputSettings",
    "ReconnectSettings",
    "RecordingSettings",
    "RgbPins",
    "Secret",
    "SoundSettings",
    "TurnSettings",
    "VadSettings",
    "WakeSettings",
    "from_mapping",
    "led_config",
    "load",
    "register_secrets",
    "show",
    "summary",
]
