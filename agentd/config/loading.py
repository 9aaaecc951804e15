"""Files → a validated :class:`Config`: the main YAML file, its ``config.d`` overlays merged
in name order, placeholders filled, the key found, and which file set each key (provenance)
kept for error messages and `check-config --show`."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentd.config.placeholders import expand_user_id
from agentd.config.schema import Config, DeviceSettings
from agentd.config.secrets import UNIT_CREDENTIAL, Secret, resolve_api_key
from agentd.config.validate import ConfigError, build, check_echo_build, check_relations
from agentd.device import presets

DEFAULT_CONFIG_PATH = Path("/etc/agentd/config.yaml")


@dataclass(frozen=True)
class Loaded:
    """A validated config plus what was learned while loading it."""

    config: Config
    api_key: Secret | None
    warnings: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    #: dotted key path → the file that set it (keys not in the map are defaults)
    origins: Mapping[str, Path] = field(default_factory=dict)


class DuplicateKey(yaml.constructor.ConstructorError):
    """A key given twice in one mapping, with where it was first."""

    def __init__(self, key: object, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(problem=f"duplicate key {key!r}", problem_mark=again)
        self.key, self.first, self.again = key, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key twice in one mapping is an error: PyYAML keeps the
    last one silently, so a second `echo:` section pasted below the first would drop it
    without a word. (Every mapping, nested too, is built through construct_mapping; ``<<``
    merge keys still merge: only the keys written out are checked.)"""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[object, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # (an unhashable key: the base constructor says so)
                continue
            if first is not key_node.start_mark:
                raise DuplicateKey(key, first, key_node.start_mark)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"config: file not found: {path}")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"config: cannot read {path}: {exc}")
        return None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # (a SafeLoader: plain data only)
    except DuplicateKey as exc:
        again = exc.again
        problems.append(
            f"config: {path}:{again.line + 1}:{again.column + 1}: {exc.key!r} is given twice in "
            f"one mapping (first at line {exc.first.line + 1}); YAML would keep only the later "
            "one: merge them into one"
        )
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problems.append(f"config: YAML syntax error at {where}: {exc.problem}")
        return None
    except yaml.YAMLError as exc:
        problems.append(f"config: YAML error in {path}: {exc}")
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(
            f"config: {path} must hold a mapping of sections (got {type(data).__name__})"
        )
        return None
    return data


def deep_merge(
    base: Mapping[str, Any],
    over: Mapping[str, Any],
    origins: dict[str, Path] | None = None,
    source: Path | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """Overlay ``over`` on ``base``: mappings merge key by key, anything else replaces.

    With ``origins``, every key path ``over`` sets is recorded as coming from ``source``, so
    an error or `check-config --show` can name the file a value came from."""
    out = dict(base)
    for key, value in over.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value, origins, source, path + ".")
            continue
        out[key] = value
        if origins is not None and source is not None:
            for old in [p for p in origins if p.startswith(path + ".")]:
                del origins[old]
            _record(value, path, origins, source)
    return out


def _record(value: Any, path: str, origins: dict[str, Path], source: Path) -> None:
    origins[path] = source
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _record(inner, f"{path}.{key}", origins, source)


def overlay_files(path: Path) -> list[Path]:
    """``config.d/*.yaml`` beside the main file, in name order."""
    d = path.parent / "config.d"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _read_merged(
    path: Path, problems: list[str]
) -> tuple[dict[str, Any] | None, list[Path], dict[str, Path]]:
    """The main file with its overlays merged over it, the files read, and each key's file."""
    origins: dict[str, Path] = {}
    data = _read_yaml(path, problems)
    files = [path]
    if data is None:
        return None, files, origins
    data = deep_merge({}, data, origins, path)
    for extra in overlay_files(path):
        files.append(extra)
        over = _read_yaml(extra, problems)
        if over is not None:
            data = deep_merge(data, over, origins, extra)
    return _under_preset(data, origins), files, origins


def _under_preset(data: dict[str, Any], origins: dict[str, Path]) -> dict[str, Any]:
    """``hardware: NAME`` puts that preset's keys under the files' own (which win); each
    preset value's origin reads ``hardware: NAME``. An unknown name is left to the validator."""
    name = data.get("hardware")
    if not isinstance(name, str) or name not in presets.PRESETS:
        return data
    preset_origins: dict[str, Path] = {}
    base = deep_merge({}, presets.PRESETS[name], preset_origins, Path(presets.source(name)))
    merged = deep_merge(base, data)
    for key, where in preset_origins.items():
        origins.setdefault(key, where)  # a key a file set exactly keeps that file
    return merged


def origin_of(key: str, origins: Mapping[str, Path]) -> Path | None:
    """The file that set ``key`` (or the nearest section above it that a file set)."""
    parts = key.split(".")
    while parts:
        found = origins.get(".".join(parts))
        if found is not None:
            return found
        parts.pop()
    return None


def _name_files(problems: list[str], origins: Mapping[str, Path], main: Path) -> list[str]:
    """Prefix each problem whose key an overlay set with that overlay's path
    (``/etc/agentd/config.d/10-site.yaml: vad.agressiveness: …``)."""
    out = []
    for problem in problems:
        source = origin_of(problem.split(": ", 1)[0], origins)
        out.append(f"{source}: {problem}" if source is not None and source != main else problem)
    return out


def from_mapping(data: Mapping[str, Any]) -> Config:
    """Validate an already-parsed mapping; raise ConfigError listing every problem."""
    problems: list[str] = []
    cfg = build(Config, data, "", problems)
    if cfg is not None and not problems:
        user_id = expand_user_id(cfg.device.user_id, problems)
        cfg = dataclasses.replace(cfg, device=DeviceSettings(user_id=user_id))
        check_relations(cfg, problems)
    if problems:
        raise ConfigError(problems)
    return typing.cast(Config, cfg)


def load(
    path: Path | str = DEFAULT_CONFIG_PATH,
    environ: Mapping[str, str] | None = None,
    require_key: bool = True,
    unit_credential: Path | None = UNIT_CREDENTIAL,
    unreadable_key_ok: bool = False,
) -> Loaded:
    """Read the main file and its ``config.d`` overlays; raise ConfigError with every problem.

    A problem in a value an overlay set names that overlay's file. ``unreadable_key_ok``
    (check-config): a key file this user may not read is a warning, not an error."""
    path = Path(path)
    env = os.environ if environ is None else environ
    problems: list[str] = []
    warnings: list[str] = []
    data, files, origins = _read_merged(path, problems)
    if problems or data is None:
        raise ConfigError(problems)
    try:
        cfg = from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(_name_files(exc.problems, origins, path)) from None
    check_echo_build(cfg, warnings)
    key_problems: list[str] = []
    holder = tuple(f for f in files if origins.get("api.api_key") == f)  # the inline key's file
    key = resolve_api_key(cfg.api, env, key_problems, warnings, holder, unit_credential)
    unread = [w for w in warnings if w.startswith("api key: ")]
    if key is None and unread and not unreadable_key_ok:
        warnings.remove(unread[0])
        what = unread[0].removeprefix("api key: ").split(",")[0]
        key_problems.append(
            f"api.api_key_env: no API key this process can read: {what} "
            "(start agentd as root or through the service)"
        )
    if require_key:
        problems += _name_files(key_problems, origins, path)
    if problems:
        raise ConfigError(problems)
    return Loaded(cfg, key, tuple(warnings), tuple(files), origins)


def led_config(path: Path | str) -> Config | None:
    """Only the ``led`` and ``button`` sections of the files, when they are valid on their own:
    `agentd run` blinks the error on the LED the owner wired even when another key is bad."""
    problems: list[str] = []
    data, _, _ = _read_merged(Path(path), problems)
    if data is None:
        return None
    try:
        return from_mapping({k: data[k] for k in ("led", "button", "hardware") if k in data})
    except ConfigError:
        return None
