"""Tools (issue 21), the pure parts: check-config's rules at exact key paths, the registry
(session tools per dialect, argument validation with jsonschema), templates that never let an
argument become shell syntax, the codec's function-call events (validated by the SDK oracle),
and the bounded history carried into a new session."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentd.config import ConfigError, from_mapping
from agentd.history import History
from agentd.realtime import client_events as ce
from agentd.realtime import events as ev
from agentd.realtime.codec import codec_for
from agentd.tools import check
from agentd.tools.registry import Call, Registry, ToolError
from agentd.tools.templates import fill, fill_json, fill_url

ECHO = {
    "name": "echo_text",
    "kind": "command",
    "description": "Echo",
    "parameters": {
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 50}},
        "required": ["text"],
    },
    "command": ["/bin/echo", "{text}"],
}


@pytest.fixture(autouse=True)
def _mcp_sdk_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules here are not about the optional SDK (scripts/check-floors runs without it);
    test_mcp_local_without_the_sdk_says_how_to_install_it is."""
    monkeypatch.setattr(check, "mcp_sdk_missing", lambda: False)


def problems(tools: list[Any], dialect: str = "openai") -> list[str]:
    try:
        from_mapping({"api": {"dialect": dialect}, "agent": {"tools": tools}})
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({**ECHO, "command": "/bin/echo {text}"}, "agent.tools[0].command: must be a list"),
        ({**ECHO, "command": ["echo", "{text}"]}, "agent.tools[0].command[0]: must be an absolute"),
        (
            {**ECHO, "command": ["/bin/echo", "{txt}"]},
            "agent.tools[0].command[1]: {txt} is not one of parameters.properties",
        ),
        ({**ECHO, "timeout_s": 0}, "agent.tools[0].timeout_s: must be between"),
        (
            {**ECHO, "comand": ["/bin/true"]},
            'agent.tools[0].comand: unknown key (did you mean "command"?)',
        ),
        ({**ECHO, "url": "http://x"}, "agent.tools[0].url: not used by kind command"),
        (
            {**ECHO, "parameters": {"type": "object", "properties": {"a": {"type": "strin"}}}},
            "agent.tools[0].parameters.properties.a.type: not a valid JSON Schema",
        ),
        (
            {**ECHO, "parameters": {"type": "string"}},
            "agent.tools[0].parameters: must be a JSON Schema with type: object",
        ),
        ({"name": "x", "kind": "builtin"}, "agent.tools[0].name: not a builtin tool"),
        ({"kind": "builtin"}, "agent.tools[0].name: is required here"),
        ({"name": "bad name", "kind": "builtin"}, "agent.tools[0].name: must be 1-64 letters"),
        ({"name": "h", "kind": "http"}, "agent.tools[0].url: is required for kind http"),
        (
            {"name": "h", "kind": "http", "url": "ftp://x"},
            "agent.tools[0].url: must start with http",
        ),
        (
            {
                "name": "h",
                "kind": "http",
                "url": "http://x/",
                "headers": {"Authorization": {"vault": "k"}},
            },
            "agent.tools[0].headers.Authorization: must be a string or one of",
        ),
        (
            {
                "name": "h",
                "kind": "http",
                "url": "http://x/",
                "headers": {"A": {"file": "rel/path"}},
            },
            "agent.tools[0].headers.A.file: must be an absolute path",
        ),
        (
            {"name": "m", "kind": "mcp", "server_label": "x"},
            "agent.tools[0].server_url: is required for kind mcp",
        ),
        (
            {"name": "l", "kind": "mcp_local"},
            "agent.tools[0].command: set either command (stdio) or url",
        ),
    ],
)
def test_check_config_names_the_exact_key(entry: dict[str, Any], expected: str) -> None:
    found = problems([entry])
    assert any(p.startswith(expected) for p in found), found


def test_a_good_config_of_every_kind_passes() -> None:
    tools = [
        ECHO,
        {"name": "set_volume", "kind": "builtin"},
        {
            "name": "lights_on",
            "kind": "http",
            "method": "POST",
            "url": "http://homeassistant.local:8123/api/services/light/turn_on",
            "parameters": {"type": "object", "properties": {"entity": {"type": "string"}}},
            "body": {"entity_id": "{entity}"},
            "headers": {"Authorization": {"credential": "ha_auth"}},
        },
        {"name": "wiki", "kind": "mcp", "server_label": "wiki", "server_url": "https://x/mcp"},
        {"name": "notes", "kind": "mcp_local", "command": ["/usr/bin/notes"]},
    ]
    assert problems(tools) == []


def test_remote_mcp_is_refused_where_the_dialect_lacks_it() -> None:
    entry = {"name": "wiki", "kind": "mcp", "server_label": "w", "server_url": "https://x/mcp"}
    for dialect in ("xstar", "openai-beta"):
        (p,) = problems([entry], dialect)
        assert p.startswith("agent.tools[0].kind: mcp") and "mcp_local" in p, p


def test_mcp_local_without_the_sdk_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "mcp_sdk_missing", lambda: True)
    (p,) = problems([{"name": "notes", "kind": "mcp_local", "command": ["/usr/bin/notes"]}])
    assert "pip install 'agentd[mcp]'" in p


def test_duplicate_names_are_refused() -> None:
    found = problems([ECHO, ECHO])
    assert found == ["agent.tools[1].name: 'echo_text' is already the name of another tool"]


def test_the_example_config_s_tools_are_valid() -> None:
    """The commented examples in config.yaml.example (the Home Assistant one among them)
    pass check-config when uncommented."""
    import yaml

    from tests.test_config import EXAMPLE

    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if "Examples, Home Assistant" in ln) + 1
    block = []
    for ln in lines[start:]:
        if not ln.startswith("  #   "):
            break
        block.append(ln[6:])
    tools = yaml.safe_load("\n".join(block))
    assert {t["kind"] for t in tools} == {"http", "command", "builtin", "mcp_local", "mcp"}
    assert problems(tools) == []


# ------------------------------------------------------------------ registry


def test_harmless_builtins_are_on_by_default_and_each_is_switchable() -> None:
    cfg = from_mapping({})
    assert set(Registry(cfg.agent.tools).tools) == {"get_time", "get_status"}
    tools = from_mapping(
        {
            "agent": {
                "tools": [
                    {"name": "get_status", "kind": "builtin", "enabled": False},
                    {"name": "set_volume", "kind": "builtin"},
                ]
            }
        }
    ).agent.tools
    assert set(Registry(tools).tools) == {"get_time", "set_volume"}


def test_session_tools_per_dialect() -> None:
    tools = from_mapping(
        {
            "agent": {
                "tools": [
                    ECHO,
                    {
                        "name": "wiki",
                        "kind": "mcp",
                        "server_label": "wiki",
                        "server_url": "https://x/mcp",
                        "headers": {"Authorization": {"env": "WIKI_TOKEN"}},
                        "allowed_tools": ["ask"],
                        "require_approval": "always",
                    },
                ]
            }
        }
    ).agent.tools
    reg = Registry(tools, resolve=lambda spec: "Bearer t0ken" if isinstance(spec, dict) else spec)
    ga = reg.session_tools("openai")
    assert [t["type"] for t in ga] == ["function", "function", "function", "mcp"]
    assert ga[-1] == {
        "type": "mcp",
        "server_label": "wiki",
        "server_url": "https://x/mcp",
        "require_approval": "always",
        "headers": {"Authorization": "Bearer t0ken"},
        "allowed_tools": ["ask"],
    }
    assert all(t["type"] == "function" for t in reg.session_tools("xstar"))


def test_arguments_are_validated_by_the_schema() -> None:
    reg = Registry(from_mapping({"agent": {"tools": [ECHO]}}).agent.tools)
    tool, args = reg.check(Call("c1", "echo_text", '{"text": "hi"}'))
    assert tool.name == "echo_text" and args == {"text": "hi"}
    for arguments, message in [
        ('{"text": 5}', "invalid arguments at text: 5 is not of type 'string'"),
        ("{}", "invalid arguments at arguments: 'text' is a required property"),
        ('{"text": "' + "x" * 60 + '"}', "invalid arguments at text"),
        ("not json", "the arguments are not valid JSON"),
        ("[1]", "the arguments must be a JSON object"),
    ]:
        with pytest.raises(ToolError) as info:
            reg.check(Call("c1", "echo_text", arguments))
        assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(ToolError, match="no tool named 'rm'"):
        reg.check(Call("c1", "rm", "{}"))


def test_mcp_local_listing_is_filtered_and_withdrawn() -> None:
    server = from_mapping(
        {
            "agent": {
                "tools": [
                    {
                        "name": "notes",
                        "kind": "mcp_local",
                        "command": ["/usr/bin/notes"],
                        "allowed_tools": ["add"],
                    }
                ]
            }
        }
    ).agent.tools[0]
    reg = Registry((server,))
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert reg.offer(server, [("add", "Add", schema), ("admin", "no", schema)])
    names = [t["name"] for t in reg.session_tools("xstar")]
    assert "add" in names and "admin" not in names
    assert not reg.offer(server, [("add", "Add", schema)])  # unchanged
    assert reg.withdraw("notes")
    assert "add" not in [t["name"] for t in reg.session_tools("xstar")]


# ------------------------------------------------------------------ templates


def test_an_argument_stays_one_argv_element_whatever_it_holds() -> None:
    nasty = "x; rm -rf / $(reboot) `id` 'q' \"d\" {text}"
    assert fill("{text}", {"text": nasty}) == nasty
    assert fill("--name={text}", {"text": nasty}) == "--name=" + nasty
    assert fill("{n}", {"n": 5}) == "5" and fill("{{literal}}", {}) == "{literal}"


def test_url_and_body_templates() -> None:
    assert fill_url("http://h/api/{e}?q={q}", {"e": "light/x", "q": "a&b"}) == (
        "http://h/api/light%2Fx?q=a%26b"
    )
    body = fill_json(
        {"entity_id": "{e}", "brightness": "{b}", "note": "to {e}"}, {"e": "l", "b": 80}
    )
    assert body == {"entity_id": "l", "brightness": 80, "note": "to l"}


# ------------------------------------------------------------------ protocol


@pytest.mark.parametrize("dialect", ["openai", "openai-beta", "xstar"])
def test_function_call_events_parse_in_every_dialect(dialect: str) -> None:
    codec = codec_for(dialect, "pi")
    done = {
        "type": "response.function_call_arguments.done",
        "event_id": "e1",
        "response_id": "r1",
        "item_id": "i1",
        "output_index": 0,
        "call_id": "call_1",
        "arguments": '{"a": 1}',
    }
    assert codec.parse(json.dumps(done)) == [ev.FunctionCall("r1", "call_1", "", '{"a": 1}')]
    item = {"id": "i1", "type": "function_call", "call_id": "call_1", "name": "add"}
    added = {"type": "response.output_item.added", "response_id": "r1", "output_index": 0}
    codec.parse(json.dumps(added | {"item": item | {"arguments": ""}}))
    # once the item was announced, the arguments' done event is a whole call by itself
    assert codec.parse(json.dumps(done)) == [ev.FunctionCall("r1", "call_1", "add", '{"a": 1}')]
    item_done = {"type": "response.output_item.done", "response_id": "r1", "output_index": 0}
    parsed = codec.parse(json.dumps(item_done | {"item": item | {"arguments": '{"a": 1}'}}))
    assert parsed == [ev.FunctionCall("r1", "call_1", "add", '{"a": 1}')]
    assert codec.parse(json.dumps({"type": "response.function_call_arguments.delta"})) == []


def test_mcp_approval_requests_parse_and_are_answered() -> None:
    codec = codec_for("openai", "pi")
    item = {
        "id": "mcpr_1",
        "type": "mcp_approval_request",
        "server_label": "wiki",
        "name": "ask",
        "arguments": "{}",
    }
    frame = {"type": "response.output_item.done", "response_id": "r", "output_index": 0}
    assert codec.parse(json.dumps(frame | {"item": item})) == [
        ev.McpApprovalRequest("mcpr_1", "wiki", "ask")
    ]
    answer = json.loads(codec.encode(ce.McpApproval("mcpr_1", True)))  # the oracle checks it
    assert answer["item"] == {
        "type": "mcp_approval_response",
        "id": "apr_mcpr_1",
        "approval_request_id": "mcpr_1",
        "approve": True,
    }


@pytest.mark.parametrize("dialect", ["openai", "openai-beta", "xstar"])
def test_every_tool_client_event_validates_against_the_sdk(
    dialect: str, schema_oracle: list[tuple[str, str]]
) -> None:
    """session.update with tools and tool_choice, outputs, out-of-band announcements and the
    replayed context, each checked by the oracle (GA or beta types)."""
    from agentd.config import AgentSettings, ApiSettings, TurnSettings
    from agentd.realtime.client_events import SessionSettings

    codec = codec_for(dialect, "pi")
    tools = Registry(from_mapping({"agent": {"tools": [ECHO]}}).agent.tools).session_tools(dialect)
    settings = SessionSettings.of(
        ApiSettings(dialect=dialect), AgentSettings(), TurnSettings(), tools
    )  # type: ignore[arg-type]
    session = json.loads(codec.encode(ce.SessionUpdate(settings)))["session"]
    assert session["tool_choice"] == "auto"
    assert [t["name"] for t in session["tools"]] == ["get_time", "get_status", "echo_text"]
    events = [
        ce.FunctionOutput("call_1", "12:00"),
        ce.CreateResponse(out_of_band=True, instructions="Say exactly: hi"),
        ce.ContextMessage("user", "what time is it"),
        ce.ContextMessage("assistant", "It is noon."),
        ce.ContextCall("call_1", "get_time", "{}"),
    ]
    for e in events:
        codec.encode(e)
    assert len(schema_oracle) == len(events) + 1
    oob = json.loads(schema_oracle[2][1])["response"]
    assert oob["conversation"] == "none" and oob["input"] == []


def test_history_is_bounded_by_count_and_size_and_keeps_calls_whole() -> None:
    h = History(max_items=4, max_chars=100)
    h.said("user", "what time is it")
    h.said("assistant", "let me look")
    h.called("c1", "get_time", "{}", '{"time": "12:00"}')
    h.said("assistant", "It is noon.")
    items = h.replay()
    assert len(items) == 4 and items[0] == ce.ContextMessage("assistant", "let me look")
    h.said("user", "x" * 90)  # the size bound drops the oldest, never an output without its call
    assert h.replay() == [ce.ContextMessage("user", "x" * 90)]
    assert History(max_items=0).replay() == []


def test_check_config_show_lists_each_tool_with_its_headers_redacted(tmp_path: Any) -> None:
    from agentd.config import load, show

    path = tmp_path / "config.yaml"
    path.write_text(
        "api: {api_key: sk-inline-key-0000}\n"
        "agent:\n"
        "  tools:\n"
        "    - name: lights_on\n"
        "      kind: http\n"
        "      url: http://ha.local/api/services/light/turn_on\n"
        "      headers: {Authorization: Bearer inline-secret-123}\n"
        "    - {name: disk, kind: command, command: [/usr/bin/df, -h]}\n"
    )
    text = show(load(path, environ={}))
    assert "inline-secret-123" not in text
    assert "- # [0]" in text and "- # [1]" in text
    assert "Authorization: '***'" in text and "command: [/usr/bin/df, -h]" in text
    assert (
        "name: lights_on" in text and str(path) in text.split("name: lights_on")[1].splitlines()[0]
    )
