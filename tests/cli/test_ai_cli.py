"""AI from the command line against a local OpenAI-compatible server (real HTTP + SSE)."""

from __future__ import annotations

import json

from tests.factories import connection_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.fake_openai import FakeOpenAI, FakeToolCall

KEY = "sk-cli-test-0123456789"


def test_ai_insights_streams_to_stdout(run_cli):
    with FakeOpenAI() as ai:
        ai.text("curl is ", "fetching ", "a page.")
        out = run_cli(
            "--tool",
            "ai_insights",
            "--summary-text",
            "curl made 5 connections",
            "--model",
            "m1",
            env={"OPENAI_BASE_URL": ai.base_url, "OPENAI_API_KEY": KEY},
            timeout=60,
        )
        body = ai.chat_requests[0].body
    assert out.returncode == 0, out.stderr
    assert out.stdout == "curl is fetching a page.\n"
    assert body["model"] == "m1" and body["stream"] is True
    assert "curl made 5 connections" in json.dumps(body["messages"])
    assert KEY not in out.stdout + out.stderr


def test_a_query_in_the_base_url_goes_on_each_request_and_is_never_logged(run_cli):
    """OPENAI_BASE_URL=…/v1?code=…: the client appended its paths after the query ("/v1/?code=…chat/completions",
    a 404 at every proxy that wants the code) and --verbose logged the code (an audit's)."""
    with FakeOpenAI() as ai:
        ai.text("fine.")
        out = run_cli("--tool", "ai_insights", "--summary-text", "curl made 5 connections", "--verbose",
                      env={"OPENAI_BASE_URL": ai.base_url + "?code=QSECRET777", "OPENAI_API_KEY": KEY},
                      timeout=60)  # fmt: skip
        (request,) = ai.chat_requests
    assert out.returncode == 0 and out.stdout == "fine.\n", out.stderr
    assert request.path == "/v1/chat/completions?code=QSECRET777", request.path
    assert "QSECRET777" not in out.stderr and "HTTP Request: POST" in out.stderr, out.stderr


def test_ai_settings_from_the_config_file_reach_the_server_and_show_with_their_source(run_cli, tmp_path):
    """``model``, ``openai_base_url`` and ``openai_api_key`` in the config file: the request carries
    them, and --show-config names the file as their source, the key masked."""
    config = tmp_path / "netspy.toml"
    with FakeOpenAI() as ai:
        config.write_text(f'model = "from-file"\nopenai_base_url = "{ai.base_url}"\nopenai_api_key = "{KEY}"\n')
        ai.text("fine.")
        out = run_cli("--tool", "ai_insights", "--summary-text", "x", env={"NETSPY_CONFIG": str(config)})
        request = ai.chat_requests[0]
        show = run_cli("--show-config", "--verbose", env={"NETSPY_CONFIG": str(config)})
        overridden = run_cli(
            "--show-config", "--model", "m2", env={"NETSPY_CONFIG": str(config), "NETSPY_AI_TIMEOUT": "9"}
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "fine.\n" and request.body is not None and request.body["model"] == "from-file"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in out.stdout + out.stderr
    assert show.returncode == 0, show.stderr
    assert KEY not in show.stdout + show.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in show.stdout.splitlines()[1:]}
    assert rows["model"] == ["from-file", f"file {config}"]
    assert rows["openai_api_key"] == ["********", f"file {config}"]
    assert rows["openai_base_url"] == [ai.base_url, f"file {config}"]
    assert rows["ai_timeout"] == ["60.0", "default"]
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in overridden.stdout.splitlines()[1:]}
    assert rows["model"] == ["m2", "command line"] and rows["ai_timeout"] == ["9.0", "env NETSPY_AI_TIMEOUT"]


def test_a_key_from_the_config_file_is_masked_in_errors_and_the_verbose_log(run_cli, tmp_path):
    config = tmp_path / "netspy.toml"
    with FakeOpenAI() as ai:
        config.write_text(f'openai_base_url = "{ai.base_url}"\nopenai_api_key = "{KEY}"\n')
        ai.error(401, f"Incorrect API key provided: {KEY}")
        out = run_cli(
            "--tool",
            "ai_insights",
            "--summary-text",
            "x",
            "--verbose",
            env={"NETSPY_CONFIG": str(config), "NETSPY_AI_MAX_RETRIES": "0"},
        )
    assert out.returncode == 1 and "401" in out.stderr, out.stderr
    assert KEY not in out.stdout + out.stderr and KEY[8:] not in out.stderr


def test_contextual_analysis_calls_a_tool_through_mcp_and_uses_the_result(run_cli):
    events = [connection_json(pid=4242, command="curl", ip="10.9.8.7", port=443, ago=2, outcome="refused")]
    with FakeEbpfServer("current", events=events) as srv, FakeOpenAI() as ai:
        ai.tool_calls(FakeToolCall("list_connections", '{"process_name": "curl", "max_events": 5}', split=4))
        ai.text("curl was refused by ", "10.9.8.7:443.")
        out = run_cli(
            "--tool",
            "contextual_analysis",
            "--query",
            "why is curl failing?",
            "--server",
            srv.url,
            env={"OPENAI_BASE_URL": ai.base_url, "OPENAI_API_KEY": KEY},
            timeout=60,
        )
        second = ai.chat_requests[1].body
    assert out.returncode == 0, out.stderr
    assert out.stdout == "curl was refused by 10.9.8.7:443.\n"
    assert '[calling list_connections({"max_events": 5, "process_name": "curl"})]' in out.stderr
    tool_msgs = [m for m in second["messages"] if m["role"] == "tool"]
    assert tool_msgs and "10.9.8.7:443" in tool_msgs[0]["content"] and "refused" in tool_msgs[0]["content"]
    assert srv.requests_to("/api/events")  # the data came from the server, via the MCP tool


def _telemetry(request) -> object:
    """The JSON of the one telemetry block of a chat request's user message."""
    from netspy_tui.ai.prompts import DATA_CLOSE, DATA_OPEN

    (content,) = [m["content"] for m in request.body["messages"] if m["role"] == "user"]
    assert content.count(DATA_OPEN) == 1, content
    return json.loads(content.split(DATA_OPEN, 1)[1].split(DATA_CLOSE, 1)[0])


def test_contextual_analysis_streamed_sends_the_model_the_tool_s_300_s_window_as_json_does(run_cli):
    """--help says contextual_analysis's --duration defaults to 300: the streamed answer (no --json) sent the model
    only {"process_name": "curl"}, and it then read 60 s; --json and the MCP tool sent the 300 s (an audit's)."""
    events = [connection_json(pid=4242, command="curl", ip="10.9.8.7", port=443, ago=2)]
    with FakeEbpfServer("current", events=events) as srv, FakeOpenAI() as ai:
        env = {"OPENAI_BASE_URL": ai.base_url, "OPENAI_API_KEY": KEY}
        sent = {}
        for extra in ([], ["--json"], ["--duration", "90"]):
            ai.text("curl is fine.")
            query = ("--tool", "contextual_analysis", "--query", "q", "--process", "curl", "--server", srv.url)
            out = run_cli(*query, *extra, env=env)
            assert out.returncode == 0, (extra, out.stderr)
            assert "curl is fine." in out.stdout and KEY not in out.stdout + out.stderr
            sent[" ".join(extra)] = _telemetry(ai.chat_requests[-1])
    assert sent[""] == sent["--json"] == {"process_name": "curl", "duration": 300}, sent
    assert sent["--duration 90"] == {"process_name": "curl", "duration": 90}, sent


def test_ai_errors_are_one_line_and_never_show_the_key(run_cli):
    with FakeOpenAI() as ai:
        ai.error(401, f"Incorrect API key provided: {KEY[:8]}****")
        out = run_cli(
            "--tool",
            "ai_insights",
            "--summary-text",
            "x",
            env={"OPENAI_BASE_URL": ai.base_url, "OPENAI_API_KEY": KEY, "NETSPY_AI_TIMEOUT": "5"},
        )
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("netspy-tui: ")
    assert KEY not in out.stderr and KEY[:8] not in out.stderr


def test_a_model_server_that_never_answers_is_said_with_the_whole_wait_the_retries_made(run_cli):
    """The SDK retries a request that timed out (NETSPY_AI_MAX_RETRIES, 2 by default): the message said "did not
    answer within 1 s" after the user had waited three tries and their backoff (an audit's). It says the tries and
    the wait, and how to stop the retries."""
    import re
    import time

    with FakeOpenAI() as ai:
        for _ in range(3):
            ai.stall()  # (one per try: the server accepts each and never answers)
        began = time.monotonic()
        env = {"OPENAI_BASE_URL": ai.base_url, "OPENAI_API_KEY": KEY, "NETSPY_AI_TIMEOUT": "1"}
        out = run_cli("--tool", "ai_insights", "--summary-text", "curl made 5 connections", env=env)
        took = time.monotonic() - began
        tries = len(ai.chat_requests)
    assert out.returncode == 1 and out.stdout == "", out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("netspy-tui: "), out.stderr
    assert tries == 3, out.stderr
    said = re.search(r"did not answer within 1 s on any of 3 tries \(about (\d+) s in all\)", out.stderr)
    assert said, out.stderr
    assert 3 <= int(said.group(1)) <= took + 1, (took, out.stderr)  # (each try waited its second; then backoff)
    assert "NETSPY_AI_MAX_RETRIES=0" in out.stderr and KEY not in out.stderr


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens once the socket is closed


def test_contextual_analysis_failures_are_one_line_never_an_exception_group(run_cli):
    """The AI stream runs inside the gateway's MCP session (an anyio task group): its error must come
    out as the one line it is, not as an ExceptionGroup traceback, streamed or --json."""
    events = [connection_json(pid=4242, command="curl", ago=2)]
    with FakeEbpfServer("current", events=events) as srv:
        cases = [
            ({}, "No AI model is configured"),
            ({"OPENAI_BASE_URL": _closed_port_url(), "OPENAI_API_KEY": KEY}, "Could not connect to the AI server"),
        ]
        for env, fragment in cases:
            for extra in ([], ["--json"]):
                out = run_cli("--tool", "contextual_analysis", "--query", "why", "--server", srv.url, *extra, env=env)
                assert out.returncode == 1, (env, extra, out.stderr)
                assert "Traceback" not in out.stderr and "ExceptionGroup" not in out.stderr, out.stderr
                assert out.stderr.count("\n") == 1 and out.stderr.startswith("netspy-tui: "), out.stderr
                assert fragment in out.stderr, (extra, out.stderr)
                assert KEY not in out.stderr and out.stdout == ""


def test_an_answer_that_breaks_off_is_kept_in_the_repl_and_the_one_shot_json(run_cli, tmp_path):
    """The AI stream breaks off mid-answer: the REPL prints what had come (stdout) and the one-line error
    (stderr); ``--tool ai_insights --json`` gives the tool's result with it, and needs no telemetry server to do
    so (the tool only explains the text it is given)."""
    from tests.hardening.conftest import DEMO

    env = {"NETSPY_CONFIG": str(tmp_path / "none.toml"), "OPENAI_API_KEY": KEY, "NETSPY_MODEL": "m1"}
    with FakeOpenAI() as ai:
        env["OPENAI_BASE_URL"] = ai.base_url
        ai.cut("curl keeps ", "retrying ")
        repl = run_cli("repl", "--replay", str(DEMO), "--replay-speed", "0", input='insights "curl made 5"\n',
                       env=env, timeout=60)  # fmt: skip
        ai.cut("nginx is ", "fine ")
        one = run_cli("--tool", "ai_insights", "--summary-text", "x", "--json", "--server", "http://127.0.0.1:9",
                      env=env, timeout=60)  # fmt: skip
    assert repl.returncode == 1 and repl.stdout == "curl keeps retrying \n", (repl.stdout, repl.stderr)
    assert repl.stderr.startswith("error: ") and "ended early" in repl.stderr and repl.stderr.count("\n") == 1
    assert one.returncode == 1, one.stderr
    result = json.loads(one.stdout)
    assert result["is_error"] and result["text"].endswith("The answer so far:\nnginx is fine ")
    assert "ended early" in one.stderr and one.stderr.count("\n") == 1 and "No eBPF server" not in one.stderr


def test_an_answer_the_model_did_not_finish_is_kept_and_said_never_passed_off_as_complete(run_cli, tmp_path):
    """finish_reason "length" (the model's limit) or "content_filter" (the provider's): the text that came is
    kept on stdout, stderr says in one line why it stops there, and the exit status is 1, as for an answer that
    broke off: a script must not take half a sentence for the answer. The REPL says the same."""
    from tests.hardening.conftest import DEMO

    env = {"NETSPY_CONFIG": str(tmp_path / "none.toml"), "OPENAI_API_KEY": KEY, "NETSPY_MODEL": "m1"}
    with FakeOpenAI() as ai:
        env["OPENAI_BASE_URL"] = ai.base_url
        ai.text("## Findings\n\n- the most likely cause is", finish_reason="length")
        one = run_cli("--tool", "ai_insights", "--summary-text", "curl made 5", env=env, timeout=60)
        ai.text("The process appears to", finish_reason="content_filter")
        repl = run_cli("repl", "--replay", str(DEMO), "--replay-speed", "0", input='insights "curl made 5"\n',
                       env=env, timeout=60)  # fmt: skip
    assert one.returncode == 1, one.stderr
    assert one.stdout == "## Findings\n\n- the most likely cause is\n"
    assert one.stderr.count("\n") == 1 and one.stderr.startswith("netspy-tui: "), one.stderr
    assert "cut off by the model's length limit" in one.stderr and "the text so far is kept" in one.stderr
    assert repl.returncode == 1 and repl.stdout == "The process appears to\n", (repl.stdout, repl.stderr)
    assert repl.stderr.startswith("error: ") and "filtered by the provider" in repl.stderr
    assert repl.stderr.count("\n") == 1


def test_a_runaway_answer_is_stopped_at_the_cap_and_the_client_hangs_up(run_cli):
    """A model that never stops: the CLI keeps the first 100,000 characters, says it stopped there, exits 1, and
    hangs up (the server sees the connection closed, not a stream it ran to its end)."""
    with FakeOpenAI() as ai:
        reply = ai.runaway()
        out = run_cli("--tool", "ai_insights", "--summary-text", "x",
                      env={"OPENAI_BASE_URL": ai.base_url, "OPENAI_API_KEY": KEY}, timeout=60)  # fmt: skip
        assert reply.ended.wait(10)
    assert reply.outcome == "hung up"
    assert out.returncode == 1, out.stderr
    assert len(out.stdout) == 100_000 and set(out.stdout) == {"Z", "\n"}  # (its chunks end lines)
    assert "passed 100,000 characters" in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_a_summary_text_longer_than_the_model_takes_is_cut_and_the_answer_says_so(run_cli):
    """A server that does not report its model's context (Ollama): 2,048 tokens are assumed, and a 19,022-character
    summary text does not fit. What was not sent is said at the top of the answer, with how to send more."""
    text = "curl made 5 connections to 10.0.0.1:443, all refused. " * 352 + "END-OF-SUMMARY"
    assert len(text) == 19_022
    with FakeOpenAI() as ai:
        ai.text("curl is refused.")
        out = run_cli("--tool", "ai_insights", "--summary-text", text,
                      env={"OPENAI_BASE_URL": ai.base_url, "OPENAI_API_KEY": KEY}, timeout=60)  # fmt: skip
        sent = json.dumps(ai.chat_requests[0].body)
    assert out.returncode == 0, out.stderr
    assert "END-OF-SUMMARY" not in sent and "[truncated: " in sent  # (what the model got)
    note, answer = out.stdout.split("\n\n", 1)
    assert answer == "curl is refused.\n"
    assert note.startswith("_Note: only the first ~") and "of the summary text's 19,022 characters" in note, note
    assert "2,048 tokens assumed: the server does not report it" in note and "NETSPY_AI_CONTEXT_TOKENS" in note


def test_a_server_that_answers_a_stream_request_with_plain_json_is_named_for_what_it_did(run_cli):
    with FakeOpenAI() as ai:
        ai.text("hello", plain=True)
        out = run_cli("--tool", "ai_insights", "--summary-text", "x",
                      env={"OPENAI_BASE_URL": ai.base_url, "OPENAI_API_KEY": KEY}, timeout=60)  # fmt: skip
    assert out.returncode == 1 and out.stdout == ""
    assert "answered a streaming request with application/json, not an event stream" in out.stderr, out.stderr
    assert "context may be smaller" not in out.stderr and out.stderr.count("\n") == 1


def test_verbose_logs_the_ai_request_without_the_http_library_s_internals(run_cli):
    """--verbose says what netspy-tui asked the model, not ~30 lines of the HTTP library's connection internals
    (the SDK's httpcore2 logs each send and receive step at DEBUG)."""
    with FakeOpenAI() as ai:
        ai.text("fine.")
        out = run_cli("--tool", "ai_insights", "--summary-text", "x", "--verbose",
                      env={"OPENAI_BASE_URL": ai.base_url, "OPENAI_API_KEY": KEY}, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "AI request: model=" in out.stderr, out.stderr
    assert "httpcore2" not in out.stderr and "receive_response_body" not in out.stderr, out.stderr


def test_crlf_line_ends_from_the_model_are_plain_newlines_not_escapes(run_cli, tmp_path):
    """A model (or proxy) that ends lines with CRLF, one CR and its LF even in different chunks: the answer
    reads as lines on stdout, in the REPL too, with no visible \\x0d; the other control characters stay escaped."""
    from tests.hardening.conftest import DEMO

    env = {"NETSPY_CONFIG": str(tmp_path / "none.toml"), "OPENAI_API_KEY": KEY}
    with FakeOpenAI() as ai:
        env["OPENAI_BASE_URL"] = ai.base_url
        ai.text("line1\r\n", "- crlf\r", "\nlast \x1b[2J\r\n")
        one = run_cli("--tool", "ai_insights", "--summary-text", "x", env=env, timeout=60)
        ai.text("line1\r\n", "- crlf\r", "\nlast\r\n")
        repl = run_cli("repl", "--replay", str(DEMO), "--replay-speed", "0", input='insights "x"\n',
                       env=env, timeout=60)  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert one.stdout == "line1\n- crlf\nlast \\x1b[2J\n"
    assert repl.returncode == 0, repl.stderr
    assert repl.stdout == "line1\n- crlf\nlast\n\n", repl.stdout  # (the REPL ends each answer with a line)
    assert "\\x0d" not in one.stdout + repl.stdout and "\r" not in one.stdout + repl.stdout
