"""Shared fixtures. Topic-specific fixtures live in the test modules that need them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from agentd import logs


@pytest.fixture(autouse=True)
def _reset_secrets() -> Iterator[None]:
    saved = set(logs._secrets)
    yield
    logs._secrets.clear()
    logs._secrets.update(saved)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every log record at DEBUG, through the same redaction filter the daemon uses."""
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(logs.RedactFilter())
    return caplog
