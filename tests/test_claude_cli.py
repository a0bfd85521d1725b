"""claude_cli: argv building, stream reading and outcome classification, against the shapes in
shared/claude-cli-reference.md."""

import claude_cli
import config
from claude_cli import CONFIG_ERROR, FATAL, RETRYABLE, SUCCESS, USAGE_LIMIT, classify


def claude_cfg(**changes):
    cfg = config.load_config(env={}, overrides={"claude": changes})
    return cfg["claude"]


def test_argv_defaults_put_nothing_after_list_flags_that_could_be_swallowed():
    argv = claude_cli.build_argv(claude_cfg())
    assert argv == ["claude", "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "acceptEdits"]


def test_argv_from_config_and_task_overrides():
    cfg = claude_cfg(model="sonnet", max_turns=5, max_budget_usd=1.5, allowed_tools=["Bash(npm test:*)"],
                     disallowed_tools=["WebFetch"], append_system_prompt="Be brief.", extra_args=["--add-dir", "../lib"],
                     permission_mode="dontAsk")
    argv = claude_cli.build_argv(cfg, {"model": "haiku", "max_turns": 9, "allowed_tools": ["Edit"]}, executable="/x/claude")
    assert argv[0] == "/x/claude"
    assert argv[argv.index("--permission-mode") + 1] == "dontAsk"
    assert "--model=haiku" in argv and "--max-turns=9" in argv and "--max-budget-usd=1.5" in argv
    assert argv[argv.index("--append-system-prompt") + 1] == "Be brief."
    i = argv.index("--allowedTools=Bash(npm test:*)")
    assert argv[i + 1] == "--allowedTools=Edit"
    assert argv[argv.index("--disallowedTools") + 1] == "WebFetch"
    assert argv[-2:] == ["--add-dir", "../lib"]


def test_stream_state_tracks_session_activity_tokens_and_result():
    s = claude_cli.StreamState()
    s.feed({"type": "system", "subtype": "init", "session_id": "abc", "model": "claude-x"})
    assert s.session_id == "abc" and s.model == "claude-x"
    changed = s.feed({"type": "assistant", "message": {"content": [
        {"type": "tool_use", "name": "Edit", "input": {"file_path": "src/auth.py"}}],
        "usage": {"input_tokens": 1000, "output_tokens": 200}}})
    assert changed and s.activity_line() == "Edit src/auth.py · 1.2k tokens · 1 tool calls"
    s.feed({"type": "assistant", "message": {"content": [
        {"type": "tool_use", "name": "Bash", "input": {"command": "npm   test"}}]}})
    assert s.last_activity == "Bash: npm test"
    s.feed({"type": "rate_limit_event", "rate_limit_info": {"status": "allowed"}})
    assert s.rate_limit_rejected is None
    s.feed({"type": "result", "subtype": "success", "is_error": False, "session_id": "abc"})
    assert s.result["subtype"] == "success"


def result(**fields):
    base = {"type": "result", "subtype": "success", "is_error": False, "result": "done", "session_id": "s",
            "num_turns": 2, "total_cost_usd": 0.01, "permission_denials": []}
    base.update(fields)
    return base


def test_success_needs_exit_zero_and_is_error_false():
    assert classify(result(), 0).kind == SUCCESS
    assert classify(result(), 1).kind == RETRYABLE


def test_usage_limit_from_the_rate_limit_event_or_the_api_error_field():
    r = result(is_error=True, api_error_status=429, api_error_type="rate_limit_error",
               api_error="usage_limit_reached", result="You've hit your 5-hour limit · resets 8:40am (UTC)")
    v = classify(r, 1, {"status": "rejected", "resetsAt": 2_000_000_000}, now=1_900_000_000)
    assert (v.kind, v.resets_at) == (USAGE_LIMIT, 2_000_000_000)
    v = classify(r, 1, None, now=1_900_000_000)
    assert v.kind == USAGE_LIMIT and v.resets_at == 1_900_000_000 + claude_cli.DEFAULT_USAGE_PAUSE_SECONDS


def test_plain_429_is_retryable_not_a_pause():
    r = result(is_error=True, api_error_status=429, result="API Error: Request rejected (429) · This request would exceed the rate limit")
    assert classify(r, 1).kind == RETRYABLE


def test_configuration_errors_release_instead_of_failing():
    for text, status in [("Not logged in · Please run /login", None), ("Invalid API key · Fix external API key", 401),
                         ("Credit balance is too low", 400)]:
        v = classify(result(is_error=True, api_error_status=status, result=text), 1)
        assert v.kind == CONFIG_ERROR, text
        assert v.fix
    assert "/login" in classify(result(is_error=True, result="Not logged in · Please run /login"), 1).fix


def test_transient_api_errors_are_retryable():
    for status, text in [(529, "API Error: 529 Overloaded."), (500, "API Error: 500 Internal server error."),
                         (None, "API Error: Can't reach the API server — check your internet or DNS (ENOTFOUND)")]:
        assert classify(result(is_error=True, api_error_status=status, result=text), 1).kind == RETRYABLE


def test_limits_and_prompt_too_long_are_not_retried():
    assert classify({"type": "result", "subtype": "error_max_turns", "is_error": True, "num_turns": 5,
                     "errors": ["Reached maximum number of turns (5)"]}, 1).kind == FATAL
    assert classify({"type": "result", "subtype": "error_max_budget_usd", "is_error": True, "total_cost_usd": 1.0,
                     "errors": ["Reached maximum budget"]}, 1).kind == FATAL
    assert classify(result(is_error=True, terminal_reason="prompt_too_long", result="Prompt is too long"), 1).kind == FATAL
    assert classify({"type": "result", "subtype": "error_during_execution", "is_error": True, "errors": ["x"]}, 1).kind == RETRYABLE


def test_bad_model_is_a_config_error_unless_the_task_chose_it():
    r = result(is_error=True, api_error_status=404, result="There's an issue with the selected model (nope).")
    assert classify(r, 1).kind == CONFIG_ERROR
    assert classify(r, 1, model_from_task=True).kind == FATAL


def test_no_result_event():
    assert classify(None, 1, stderr_tail="error: unknown option '--bogus'\n").kind == CONFIG_ERROR
    assert classify(None, 1, stderr_tail="--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons\n").kind == CONFIG_ERROR
    v = classify(None, -9, stderr_tail="Segmentation fault\n")
    assert v.kind == RETRYABLE and "Segmentation fault" in v.message


def test_denial_summary_names_tools_and_the_fix():
    names, fix = claude_cli.denial_summary([{"tool_name": "Write"}, {"tool_name": "Write"}, {"tool_name": "Bash"}])
    assert names == "Write (2×), Bash"
    assert 'allowed_tools = ["Write", "Bash"]' in fix


def test_describe_tool_use():
    assert claude_cli.describe_tool_use("Read", {"file_path": "a.py"}) == "Read a.py"
    assert claude_cli.describe_tool_use("Grep", {"pattern": "TODO"}) == "Grep TODO"
    assert claude_cli.describe_tool_use("Task", {"description": "explore"}) == "Task: explore"
    assert claude_cli.describe_tool_use("Weird", None) == "Weird"
