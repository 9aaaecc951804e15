"""Shared fixtures. Topic-specific fixtures live in the test modules that need them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests import rigs

rigs.install_asoundrc()  # before any ALSA call in this process

from agentd import logs  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_secrets() -> Iterator[None]:
    saved = set(logs._secrets)
    yield
    logs._secrets.clear()
    logs._secrets.update(saved)


@pytest.fixture(autouse=True)
def _restore_log_levels() -> Iterator[None]:
    """A daemon run in-process sets the root level from its config: undo it after each test."""
    root = logging.getLogger()
    saved = root.level
    yield
    root.setLevel(saved)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every log record at DEBUG, through the same redaction filter the daemon uses."""
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(logs.RedactFilter())
    return caplog


@pytest.fixture(autouse=True)
def schema_oracle(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every client event the project encodes, in every test, is validated strictly against
    the pinned openai-python types; so is every event the simulator sends."""
    from agentd.realtime import codec
    from agentd.sim import server
    from tests import oracle

    seen: list[tuple[str, str]] = []
    violations: list[str] = []
    encode = codec.Codec._encode

    def checked_encode(self: codec.Codec, event: dict[str, object]) -> str:
        frame = encode(self, event)
        oracle.validate_client(self.dialect, frame)
        seen.append((self.dialect, frame))
        return frame

    monkeypatch.setattr(codec.Codec, "_encode", checked_encode)
    init = server.Simulator.__init__

    def checked_init(self: server.Simulator, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        if self._validate is None:
            self._validate = checked_server

    def checked_server(dialect: str, frame: str) -> None:
        try:
            oracle.validate_server(dialect, frame)
        except oracle.SchemaViolation as exc:
            violations.append(str(exc))
            raise

    monkeypatch.setattr(server.Simulator, "__init__", checked_init)
    yield seen
    assert not violations, f"simulator sent events the SDK rejects: {violations[:3]}"


@pytest.fixture(scope="session")
def room() -> Iterator[rigs.PulseRoom]:
    """The real-time PulseAudio room (null sink `room`; ALSA PCMs `mic` and `spk`)."""
    r = rigs.PulseRoom(rigs.PULSE_SOCKET.parent).start()
    yield r
    r.stop()
