"""``{param}`` placeholders filled from validated arguments (argv, URL, JSON body)."""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote


def text_of(value: Any) -> str:
    """An argument as text: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def fill(template: str, args: Mapping[str, Any], escape: Callable[[str], str] = str) -> str:
    """``template`` with each ``{name}`` replaced (a missing optional argument is empty);
    ``escape`` is applied to each value (URL quoting), never to the template."""
    out = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(escape(text_of(args[name])) if name in args else "")
    return "".join(out)


def fill_url(template: str, args: Mapping[str, Any]) -> str:
    return fill(template, args, lambda v: quote(v, safe=""))


def fill_json(template: Any, args: Mapping[str, Any]) -> Any:
    """A JSON body template: a string that is exactly ``"{name}"`` becomes the argument
    itself (a number stays a number); other strings are filled as text."""
    if isinstance(template, str):
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        if len(fields) == 1 and template == "{" + fields[0] + "}":
            return args.get(fields[0])
        return fill(template, args)
    if isinstance(template, dict):
        return {k: fill_json(v, args) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_json(v, args) for v in template]
    return template
