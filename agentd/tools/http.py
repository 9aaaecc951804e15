"""``http`` tools: one request (URL and JSON body from templates), with header secrets from
files or credentials. stdlib ``http.client`` in a worker thread; cancelling closes the
socket under it, so an interrupt really ends the request."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from agentd.tools.registry import error_output
from agentd.tools.settings import ToolSettings
from agentd.tools.templates import fill_json, fill_url


class _Request:
    """One request whose connection the event loop can close from outside."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        kwargs: dict[str, Any] = {"timeout": timeout}
        if parts.scheme == "https":
            kwargs["context"] = ssl.create_default_context()
        self.conn = cls(parts.hostname or "", parts.port, **kwargs)

    def send(
        self, method: str, body: bytes | None, headers: Mapping[str, str], cap: int
    ) -> tuple[int, bytes, bool]:
        self.conn.request(method, self.path, body=body, headers=dict(headers))
        resp = self.conn.getresponse()
        data = resp.read(cap + 1)
        return resp.status, data[:cap], len(data) > cap

    def abort(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


async def run_http(
    t: ToolSettings, args: Mapping[str, Any], headers: Mapping[str, str]
) -> tuple[str, str]:
    """(output for the model, status for the log); ``headers`` already resolved."""
    assert t.url is not None
    url = fill_url(t.url, args)
    body: bytes | None = None
    sent = dict(headers)
    if t.body is not None:
        body = json.dumps(fill_json(t.body, args), ensure_ascii=False).encode()
        sent.setdefault("Content-Type", "application/json")
    req = _Request(url, t.timeout_s)
    try:
        status, data, cut = await asyncio.wait_for(
            asyncio.to_thread(req.send, t.method, body, sent, t.output_max_bytes), t.timeout_s
        )
    except TimeoutError:
        return error_output(
            f"no answer from {urlsplit(url).hostname} in {t.timeout_s:g} s"
        ), "timeout"
    except (OSError, http.client.HTTPException) as exc:
        return error_output(f"request failed: {type(exc).__name__}: {exc}"[:300]), "failed"
    finally:
        req.abort()  # cancelled (an interrupt) or done: the socket goes either way
    text = data.decode("utf-8", "replace") + ("\n[response cut]" if cut else "")
    if status >= 400:
        return error_output(f"HTTP {status}: {text[:500]}"), f"HTTP {status}"
    return text, f"HTTP {status}"
