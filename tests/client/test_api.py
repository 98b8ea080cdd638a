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


async def test_developer_api_ai_tools_use_the_one_settings_model(monkeypatch, tmp_path):
    """Without ``ai=``, the AI tools read the settings as the CLI does (here the config file), ``model`` on top."""
    from tests.fake_openai import FakeOpenAI

    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "NETSPY_MODEL"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config.toml"
    monkeypatch.setenv("NETSPY_CONFIG", str(config))
    with FakeEbpfServer("current", events=[]) as srv, FakeOpenAI() as ai:
        config.write_text(f'openai_base_url = "{ai.base_url}"\nmodel = "from-file"\n')
        ai.text("from the file.")
        ai.text("from the argument.")
        async with NetspyClient(srv.url) as client:
            first = await client.call_tool("ai_insights", {"summary_text": "x"})
        async with NetspyClient(srv.url, model="m2") as client:
            second = await client.call_tool("ai_insights", {"summary_text": "x"})
        models = [r.body["model"] for r in ai.chat_requests if r.body]
    assert (first.text, second.text) == ("from the file.", "from the argument."), (first.text, second.text)
    assert models == ["from-file", "m2"]
