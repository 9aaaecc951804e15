"""The API key: where it is looked up (env, key file, systemd credential, inline), the
wrapper that keeps it out of reprs, and registering every secret the config holds with the
log redaction before anything can print it."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from agentd import logs
from agentd.config.schema import ApiSettings
from agentd.config.validate import is_local
from agentd.realtime import dialects

#: The key file the unit hands the daemon as credential ``api_key`` (LoadCredential=).
UNIT_CREDENTIAL = Path("/etc/agentd/api_key")


class Secret:
    """An API key that cannot leak through repr/str/format into a log line."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<redacted>, source={self.source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def register_secrets(api: ApiSettings, key: str | None) -> None:
    """The key and every custom header value go into the handshake, so into websockets'
    debug log and into error texts a proxy may echo: redact them all like the key."""
    if key:
        logs.register_secret(key)
    for value in api.headers.values():
        logs.register_secret(value)


def _others_can_read(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def _whoami() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _credential(
    environ: Mapping[str, str],
    unit_credential: Path | None,
    problems: list[str],
    warnings: list[str],
) -> Secret | None:
    """The systemd credential: ``$CREDENTIALS_DIRECTORY/api_key`` under the unit; outside it
    (check-config, a run by hand) the file the unit loads, read directly when readable."""
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    origin = unit_credential or UNIT_CREDENTIAL
    if cred_dir:
        path, shown = Path(cred_dir) / "api_key", f"the systemd credential api_key ({origin})"
    elif unit_credential is not None:
        path, shown = unit_credential, f"{unit_credential} (the unit's LoadCredential=api_key)"
    else:
        return None
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        if cred_dir:  # the service itself cannot read its credential
            problems.append(f"api.api_key_env: cannot read {shown}: {exc.strerror}")
            return None
        warnings.append(
            f"api key: {path} is not readable by {_whoami()}, so whether the service has a key "
            "was not checked (it reads the file as root); check with: sudo agentd check-config"
        )
        return None
    except OSError as exc:
        problems.append(f"api.api_key_env: cannot read {shown}: {exc.strerror or exc}")
        return None
    if not value:
        problems.append(
            f"api.api_key_env: no API key: {origin} is empty; put your key in it "
            f"(sudo nano {origin})"
        )
        return None
    return Secret(value, shown)


def resolve_api_key(
    api: ApiSettings,
    environ: Mapping[str, str],
    problems: list[str],
    warnings: list[str],
    config_files: tuple[Path, ...] = (),
    unit_credential: Path | None = None,
) -> Secret | None:
    """Find the key: api_key_env, api_key_file, the systemd credential, inline (in order);
    ``Secret.source`` says which, for check-config and the start-up log."""
    if api.api_key_env and environ.get(api.api_key_env, "").strip():
        return Secret(environ[api.api_key_env].strip(), f"${api.api_key_env}")
    if api.api_key_file:
        path = Path(api.api_key_file)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"api.api_key_file: cannot read {path}: {exc.strerror or exc}")
            return None
        if not value:
            problems.append(f"api.api_key_file: {path} is empty")
            return None
        if _others_can_read(path):
            warnings.append(
                f"api.api_key_file: {path} is readable by other users; run: chmod 600 {path}"
            )
        return Secret(value, str(path))
    before = len(problems)
    found = _credential(environ, unit_credential, problems, warnings)
    if found is not None:
        return found
    if api.api_key:
        del problems[before:]  # an empty credential file does not matter then
        warnings.append(
            "api.api_key: the key is written in the config file; prefer api.api_key_file "
            "or the systemd credential /etc/agentd/api_key"
        )
        for f in config_files:
            if _others_can_read(f):
                warnings.append(f"api.api_key: {f} holds a key and is readable by other users")
        return Secret(api.api_key, "api.api_key in the config file")
    if is_local(dialects.url(api)):
        del problems[before:]
        return None  # the bundled simulator needs no key
    if len(problems) > before or any(w.startswith("api key: ") for w in warnings):
        return None
    where = f"${api.api_key_env} is not set" if api.api_key_env else "api.api_key_env is null"
    problems.append(
        f"api.api_key_env: no API key found: {where}, and neither api.api_key_file nor "
        f"$CREDENTIALS_DIRECTORY/api_key ({UNIT_CREDENTIAL} under the service) provides one"
    )
    return None
