"""Tools the model can call: declared in ``agent.tools``, offered in ``session.update``, run by
the daemon (builtin, command, http, mcp_local) or by the server itself (mcp, OpenAI GA).

:mod:`~agentd.tools.settings` (the YAML shape), :mod:`~agentd.tools.check` (check-config's
rules), :mod:`~agentd.tools.registry` (pure: session tools, argument validation, outputs),
and one runner module per kind.
"""
