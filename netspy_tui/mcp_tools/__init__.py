"""The MCP side: the ``network-telemetry`` server, the app's client (gateway) and the AI bridge.

Tool names live here (no heavy imports) so the CLI can list them without importing the SDK.
"""

#: Tools that only read telemetry: the ones an AI model may call.
DATA_TOOLS = (
    "get_network_summary",
    "list_connections",
    "analyze_patterns",
    "get_packet_drop_summary",
    "list_packet_drops",
    "analyze_packet_drops",
    "list_processes",
    "get_traffic",
    "get_connect_latency",
    "server_status",
)
#: Tools that ask an AI model.
AI_TOOLS = ("ai_insights", "contextual_analysis")
ALL_TOOLS = DATA_TOOLS + AI_TOOLS
#: The resource whose updates say "new telemetry stored": live views fetch after it instead of polling.
EVENTS_URI = "netspy://telemetry/events"
