"""The recent turns of the conversation, bounded by count and size, replayed into a new
session after a renewal or reconnect (a new OpenAI session starts with nothing).

Pure: the daemon records transcripts and tool calls; :meth:`History.replay` gives the
client events that put them back. xStar keeps memory per userId on its side, so the daemon
keeps no history there (``max_items`` 0).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agentd.realtime import client_events as ce

Entry = ce.ContextMessage | ce.ContextCall | ce.FunctionOutput


def _size(e: Entry) -> int:
    match e:
        case ce.ContextMessage(text=text):
            return len(text)
        case ce.ContextCall(name=name, arguments=arguments):
            return len(name) + len(arguments)
        case ce.FunctionOutput(output=output):
            return len(output)
    return 0


@dataclass
class History:
    max_items: int = 12
    max_chars: int = 4000

    def __post_init__(self) -> None:
        self._items: deque[Entry] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def said(self, role: str, text: str) -> None:
        if role in ("user", "assistant") and text.strip():
            self._add(ce.ContextMessage("user" if role == "user" else "assistant", text.strip()))

    def called(self, call_id: str, name: str, arguments: str, output: str) -> None:
        self._add(ce.ContextCall(call_id, name, arguments))
        self._add(ce.FunctionOutput(call_id, output))

    def _add(self, e: Entry) -> None:
        if self.max_items <= 0:
            return
        self._items.append(e)
        while len(self._items) > self.max_items or self._chars() > self.max_chars:
            self._items.popleft()
        # an output whose call was dropped would be refused by the server
        while self._items and isinstance(self._items[0], ce.FunctionOutput):
            self._items.popleft()

    def _chars(self) -> int:
        return sum(_size(e) for e in self._items)

    def replay(self) -> list[Entry]:
        """The client events that put the kept turns into a new session, oldest first."""
        return list(self._items)
