from netspy_tui.api import NetspyClient
from tests.factories import connection_json
from tests.fake_ebpf_server import FakeEbpfServer


async def test_developer_api_mirrors_the_seed_client():
    with FakeEbpfServer("current", events=[connection_json(command="curl", ago=1)]) as srv:
        async with NetspyClient(srv.url) as client:
            names = [t.name for t in await client.list_tools()]
            result = await client.call_tool("get_network_summary", {"process_name": "curl"})
            bad = await client.call_tool("get_network_summary", {"pid": 0})
    assert "list_connections" in names
    assert result.text == "Process 'curl' made 1 outbound connection attempt over the last 60 seconds"
    assert result.data["count"] == 1 and not result.is_error
    assert bad.is_error and bad.text == "Invalid arguments for get_network_summary: pid must be >= 1."
