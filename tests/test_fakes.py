"""Tests of the Claude CLI test doubles (tests/fake_claude.py, tests/messages_server.py)
and end-to-end runs of the REAL claude CLI against the messages server.

The real-CLI tests install @anthropic-ai/claude-code with npm once per session
(cached in ~/.cache/klauss-tests/claude-code) and skip, with the reason, only
when npm is missing or the install fails.  KLAUSS_SKIP_REAL_CLI=1 skips them.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import messages_server as ms  # noqa: E402
import real_cli  # noqa: E402
from conftest import install_fake_claude, pid_alive  # noqa: E402
from conftest import wait_for as wait_until  # noqa: E402

FAKE = os.path.join(HERE, "fake_claude.py")
# What the tests run: the fake from its bytecode (conftest.py compiles it once); a script is compiled
# at every start (half of a run's CPU). The executable itself is checked on its own below.
FAKE_RUN = os.path.join(HERE, "fake_claude_start.py")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
PY39 = os.path.expanduser("~/.pyenv/versions/3.9.18/bin/python3")


# --------------------------------------------------------------------------- helpers
class Out:
    def __init__(self, p):
        self.returncode = p.returncode
        self.stdout = p.stdout.decode("utf-8") if isinstance(p.stdout, bytes) else p.stdout
        self.stderr = p.stderr.decode("utf-8") if isinstance(p.stderr, bytes) else p.stderr
        self.events = [json.loads(line) for line in self.stdout.splitlines()
                       if line.startswith("{")]

    @property
    def result(self):
        assert self.events and self.events[-1]["type"] == "result", self.stdout
        return self.events[-1]

    def types(self):
        return [e["type"] + ("/" + e["subtype"] if e["type"] == "system" else "") for e in self.events]


def fake_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FAKE_CLAUDE_", "CLAUDE_", "ANTHROPIC_", "KLAUSS_"))
           and k != "IS_SANDBOX"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def fake(args, stdin="", cwd=None, env=None, python=None, timeout=30):
    """Run the fake CLI; stdin None means /dev/null."""
    cmd = [python or sys.executable, FAKE_RUN] + list(args)
    p = subprocess.run(cmd, input=None if stdin is None else stdin.encode("utf-8"),
                       stdin=subprocess.DEVNULL if stdin is None else None,
                       capture_output=True, cwd=cwd,
                       env=env if env is not None else fake_env(), timeout=timeout)
    return Out(p)


def start_fake(args, prompt, cwd, env=None, **kw):
    """Start the fake in the background with ``prompt`` written to its (closed) stdin."""
    p = subprocess.Popen([sys.executable, FAKE_RUN] + list(args), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                         env=env if env is not None else fake_env(), **kw)
    p.stdin.write(prompt.encode("utf-8"))
    p.stdin.close()
    p.stdin = None  # so that communicate() does not touch it
    return p


def directives(*actions):
    return "do the task\n" + "".join("@fake %s\n" % json.dumps(a) for a in actions)


SJ = ["-p", "--output-format", "stream-json", "--verbose"]


# =========================================================================== fake CLI
class TestFakeInterface:
    def test_version(self):
        for flag in ("--version", "-v"):
            o = fake([flag], stdin=None)
            assert o.returncode == 0
            assert o.stdout == "2.1.197 (Claude Code)\n"

    def test_executable_with_shebang(self, tmp_path):
        assert os.access(FAKE, os.X_OK)
        with open(FAKE) as f:
            assert f.readline().strip() == "#!/usr/bin/env python3"
        p = subprocess.run([FAKE, "--version"], stdout=subprocess.PIPE, env=fake_env(), timeout=30)
        assert p.stdout == b"2.1.197 (Claude Code)\n"

    def test_default_success_text(self, tmp_path):
        o = fake(["-p"], stdin="say hi\n", cwd=tmp_path)
        assert o.returncode == 0
        assert o.stdout == "fake claude did: say hi\n"

    def test_default_success_json(self, tmp_path):
        o = fake(["-p", "--output-format", "json"], stdin="say hi", cwd=tmp_path)
        assert o.returncode == 0
        assert len(o.stdout.splitlines()) == 1
        r = json.loads(o.stdout)
        assert r["type"] == "result" and r["subtype"] == "success" and r["is_error"] is False
        assert r["result"] == "fake claude did: say hi"
        assert r["num_turns"] == 1
        assert r["total_cost_usd"] == pytest.approx(0.0123)
        assert r["terminal_reason"] == "completed" and r["stop_reason"] == "end_turn"
        assert r["permission_denials"] == []
        assert set(r["usage"]) >= {"input_tokens", "output_tokens", "cache_creation_input_tokens",
                                   "cache_read_input_tokens"}
        assert list(r["modelUsage"].values())[0]["costUSD"] == pytest.approx(0.0123)
        assert real_cli_uuid(r["session_id"])
        assert isinstance(r["duration_ms"], int) and r["duration_ms"] >= 0

    def test_json_verbose_is_an_array(self, tmp_path):
        o = fake(["-p", "--output-format", "json", "--verbose"], stdin="x", cwd=tmp_path)
        arr = json.loads(o.stdout)
        assert isinstance(arr, list)
        assert arr[0]["type"] == "system" and arr[-1]["type"] == "result"

    def test_stream_json_requires_verbose(self):
        o = fake(["-p", "--output-format", "stream-json"], stdin="hi")
        assert o.returncode == 1 and o.stdout == ""
        assert o.stderr == "Error: When using --print, --output-format=stream-json requires --verbose\n"

    @pytest.mark.parametrize("stdin", [None, ""])
    def test_no_prompt(self, stdin):
        o = fake(["-p", "--output-format", "json"], stdin=stdin)
        assert o.returncode == 1 and o.stdout == ""
        assert o.stderr == ("Error: Input must be provided either through stdin or as a prompt "
                            "argument when using --print\n")

    def test_input_check_comes_before_verbose_check(self):
        o = fake(["-p", "--output-format", "stream-json"], stdin=None)
        assert o.stderr.startswith("Error: Input must be provided")

    def test_unknown_option(self):
        o = fake(["-p", "--xyz", "hi"], stdin=None)
        assert o.returncode == 1 and o.stdout == ""
        assert o.stderr == "error: unknown option '--xyz'\n"
        o = fake(["-p", "--verbose=1", "hi"], stdin=None)
        assert o.stderr.startswith("error: unknown option '--verbose=1'")

    def test_invalid_choice_wins_over_unknown_option(self):
        o = fake(["-p", "--xyz", "--permission-mode", "bogus"], stdin=None)
        assert o.stderr.startswith("error: option '--permission-mode <mode>' argument 'bogus'")

    def test_permission_mode_choices(self, tmp_path):
        o = fake(["-p", "--permission-mode", "bogus", "hi"], stdin=None)
        assert o.returncode == 1
        assert o.stderr == ("error: option '--permission-mode <mode>' argument 'bogus' is invalid. "
                            "Allowed choices are acceptEdits, auto, bypassPermissions, default, "
                            "dontAsk, plan.\n")
        for mode in ("acceptEdits", "auto", "default", "dontAsk", "plan"):
            assert fake(["-p", "--permission-mode", mode, "hi"], stdin=None, cwd=tmp_path).returncode == 0
        # 2.1.197 (what node 20 installs) rejects `manual`; 2.1.329 accepts it
        assert fake(["-p", "--permission-mode", "manual", "hi"], stdin=None).returncode == 1
        new = fake(["-p", "--permission-mode", "manual", "hi"], stdin=None, cwd=tmp_path,
                   env=fake_env(FAKE_CLAUDE_VERSION="2.1.329"))
        assert new.returncode == 0
        bad = fake(["-p", "--permission-mode", "x", "hi"], stdin=None,
                   env=fake_env(FAKE_CLAUDE_VERSION="2.1.329"))
        assert "Allowed choices are acceptEdits, auto, bypassPermissions, manual, dontAsk, plan." in bad.stderr

    def test_output_format_choices(self):
        o = fake(["-p", "--output-format", "yaml", "hi"], stdin=None)
        assert o.stderr == ("error: option '--output-format <format>' argument 'yaml' is invalid. "
                            "Allowed choices are text, json, stream-json.\n")

    def test_missing_argument(self):
        assert fake(["-p", "--model"], stdin=None).stderr == \
            "error: option '--model <model>' argument missing\n"
        assert fake(["-p", "--allowedTools"], stdin=None).stderr == \
            "error: option '--allowedTools, --allowed-tools <tools...>' argument missing\n"

    def test_value_option_takes_dash_word(self, tmp_path):
        # like commander: a required value is taken even if it starts with '-'
        o = fake(["-p", "--output-format", "json", "--model", "--verbose", "hi"], stdin=None, cwd=tmp_path)
        assert o.returncode == 0
        assert list(json.loads(o.stdout)["modelUsage"]) == ["--verbose"]

    def test_equals_form(self, tmp_path):
        o = fake(["-p", "--output-format=json", "--model=opus", "hi"], stdin=None, cwd=tmp_path)
        assert o.returncode == 0 and json.loads(o.stdout)["result"] == "fake claude did: hi"

    @pytest.mark.parametrize("flag", ["--allowedTools", "--allowed-tools", "--disallowedTools",
                                      "--disallowed-tools", "--add-dir", "--mcp-config", "--tools"])
    def test_list_flags_swallow_the_prompt(self, flag, tmp_path):
        o = fake(["-p", flag, "Read", "say hi"], stdin=None, cwd=tmp_path)
        assert o.returncode == 1 and o.stderr.startswith("Error: Input must be provided")
        o = fake(["-p", "--output-format", "json", flag, "Read", "--", "say hi"], stdin=None, cwd=tmp_path)
        assert o.returncode == 0 and json.loads(o.stdout)["result"] == "fake claude did: say hi"
        o = fake(["-p", "--output-format", "json", flag, "Read", "Bash", "--verbose", "p"], stdin=None,
                 cwd=tmp_path)
        assert o.returncode == 0 and json.loads(o.stdout)[-1]["result"] == "fake claude did: p"

    def test_other_flags_accepted(self, tmp_path):
        o = fake(["-p", "--output-format", "json", "--model", "sonnet", "--fallback-model", "haiku",
                  "--append-system-prompt", "be brief", "--system-prompt", "you are x",
                  "--add-dir", str(tmp_path), "--mcp-config", '{"mcpServers":{}}', "--strict-mcp-config",
                  "--settings", "{}", "--max-turns", "5", "--max-budget-usd", "1.5",
                  "--no-session-persistence", "--include-partial-messages", "--", "hello"],
                 stdin=None, cwd=tmp_path)
        assert o.returncode == 0, o.stderr
        assert json.loads(o.stdout)["result"] == "fake claude did: hello"

    @pytest.mark.parametrize("value", ["0", "-1", "abc"])
    def test_max_budget_must_be_positive(self, value):
        o = fake(["-p", "--max-budget-usd", value, "hi"], stdin=None)
        assert o.returncode == 1
        assert o.stderr == "error: --max-budget-usd must be a positive number greater than 0\n"

    @pytest.mark.parametrize("args", [["--dangerously-skip-permissions"],
                                      ["--permission-mode", "bypassPermissions"]])
    def test_root_refusal(self, args, tmp_path):
        o = fake(["-p"] + args + ["hi"], stdin=None, cwd=tmp_path)
        if IS_ROOT:
            assert o.returncode == 1
            assert o.stderr == ("--dangerously-skip-permissions cannot be used with root/sudo "
                                "privileges for security reasons\n")
        else:
            assert o.returncode == 0
        o = fake(["-p"] + args + ["hi"], stdin=None, cwd=tmp_path, env=fake_env(IS_SANDBOX=1))
        assert o.returncode == 0

    def test_session_id(self, tmp_path):
        o = fake(["-p", "--session-id", "nope", "hi"], stdin=None)
        assert o.returncode == 1 and o.stderr == "Error: Invalid session ID. Must be a valid UUID.\n"
        sid = "11111111-2222-4333-8444-555555555555"
        o = fake(SJ + ["--session-id", sid], stdin="hi", cwd=tmp_path)
        assert {e["session_id"] for e in o.events} == {sid}

    def test_prompt_arg_and_stdin_are_joined(self, tmp_path):
        log = tmp_path / "log"
        o = fake(["-p", "--output-format", "json", "from arg"], stdin="from stdin", cwd=tmp_path,
                 env=fake_env(FAKE_CLAUDE_LOG=log))
        assert json.loads(o.stdout)["result"] == "fake claude did: from arg"
        rec = json.loads((log / "invocations.jsonl").read_text())
        assert rec["prompt"] == "from arg\nfrom stdin" and rec["stdin"] == "from stdin"

    def test_open_stdin_without_data_warns_and_goes_on(self, tmp_path):
        p = subprocess.Popen([sys.executable, FAKE_RUN, "-p", "--output-format", "json", "arg only"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd=tmp_path, env=fake_env(FAKE_CLAUDE_STDIN_TIMEOUT="0.2"))
        try:
            p.wait(timeout=30)  # stdin stays open: we never write to it nor close it
            out, err = p.stdout.read(), p.stderr.read()
        finally:
            if p.poll() is None:
                p.kill()
            p.stdin.close()
            p.stdout.close()
            p.stderr.close()
        assert p.returncode == 0
        assert err.decode().startswith("Warning: no stdin data received in 3s, proceeding without it.")
        assert json.loads(out)["result"] == "fake claude did: arg only"


def real_cli_uuid(s):
    import uuid
    return str(uuid.UUID(s)) == s and uuid.UUID(s).version == 4


class TestFakeScenarios:
    def test_stream_json_write_sequence(self, tmp_path):
        o = fake(SJ + ["--permission-mode", "acceptEdits", "--model", "claude-test-1"],
                 stdin=directives({"write": "sub/out.txt", "content": "hello\n"}, {"text": "all done"}),
                 cwd=tmp_path)
        assert o.returncode == 0, o.stderr
        assert (tmp_path / "sub" / "out.txt").read_text() == "hello\n"
        assert o.types() == ["system/init", "assistant", "user", "assistant", "result"]
        init = o.events[0]
        assert init["cwd"] == str(tmp_path) and init["model"] == "claude-test-1"
        assert init["permissionMode"] == "acceptEdits" and init["claude_code_version"] == "2.1.197"
        assert "Write" in init["tools"] and real_cli_uuid(init["session_id"])
        tu = o.events[1]["message"]["content"][0]
        assert tu["type"] == "tool_use" and tu["name"] == "Write"
        assert tu["input"] == {"file_path": str(tmp_path / "sub" / "out.txt"), "content": "hello\n"}
        tr = o.events[2]["message"]["content"][0]
        assert tr["type"] == "tool_result" and tr["tool_use_id"] == tu["id"] and not tr.get("is_error")
        assert o.events[2]["tool_use_result"]["type"] == "create"
        assert o.events[3]["message"]["content"] == [{"type": "text", "text": "all done"}]
        r = o.result
        assert r["result"] == "all done" and r["num_turns"] == 2
        assert r["total_cost_usd"] == pytest.approx(0.0246)
        assert r["usage"]["input_tokens"] == 200 and r["usage"]["output_tokens"] == 40
        assert {e["session_id"] for e in o.events} == {init["session_id"]}

    def test_edit_and_append(self, tmp_path):
        (tmp_path / "f.txt").write_text("one two\n")
        o = fake(SJ + ["--permission-mode", "acceptEdits"], cwd=tmp_path,
                 stdin=directives({"edit": "f.txt", "old": "two", "new": "2"},
                                  {"append": "f.txt", "content": "three\n"},
                                  {"edit": "f.txt", "old": "missing", "new": "x"}))
        assert o.returncode == 0
        assert (tmp_path / "f.txt").read_text() == "one 2\nthree\n"
        names = [e["message"]["content"][0]["name"] for e in o.events if e["type"] == "assistant"
                 and e["message"]["content"][0]["type"] == "tool_use"]
        assert names == ["Edit", "Write", "Edit"]
        results = [e["message"]["content"][0] for e in o.events if e["type"] == "user"]
        assert results[2]["is_error"] is True and "String to replace not found" in results[2]["content"]
        assert o.result["num_turns"] == 4

    @pytest.mark.parametrize("args,allowed", [
        ([], False),
        (["--permission-mode", "default"], False),
        (["--permission-mode", "dontAsk"], False),
        (["--permission-mode", "plan"], False),
        (["--permission-mode", "acceptEdits"], True),
        (["--permission-mode", "auto"], True),
        (["--allowedTools", "Write"], True),
        (["--allowedTools", "Bash(git *) Edit"], True),
        (["--allowed-tools", "Read,Edit(*.txt)"], True),
        (["--allowedTools", "Edit(*.py)"], False),
        (["--allowedTools", "Read"], False),
        (["--permission-mode", "acceptEdits", "--disallowedTools", "Write"], False),
    ])
    def test_write_permissions(self, args, allowed, tmp_path):
        o = fake(SJ + args + ["--"], stdin=directives({"write": "out.txt", "content": "x"}), cwd=tmp_path)
        assert o.returncode == 0
        r = o.result
        assert r["subtype"] == "success" and r["is_error"] is False
        assert (tmp_path / "out.txt").exists() == allowed
        if allowed:
            assert r["permission_denials"] == []
        else:
            [d] = r["permission_denials"]
            assert d["tool_name"] == "Write"
            assert d["tool_input"] == {"file_path": str(tmp_path / "out.txt"), "content": "x"}
            tr = [e for e in o.events if e["type"] == "user"][0]["message"]["content"][0]
            assert tr["is_error"] is True and tr["tool_use_id"] == d["tool_use_id"]

    def test_denial_texts(self, tmp_path):
        o = fake(SJ, stdin=directives({"write": "a.txt", "content": "x"}), cwd=tmp_path)
        tr = [e for e in o.events if e["type"] == "user"][0]["message"]["content"][0]
        assert tr["content"] == ("Claude requested permissions to write to %s, but you haven't "
                                 "granted it yet." % (tmp_path / "a.txt"))
        o = fake(SJ + ["--permission-mode", "dontAsk"], stdin=directives({"write": "a.txt"}), cwd=tmp_path)
        tr = [e for e in o.events if e["type"] == "user"][0]["message"]["content"][0]
        assert tr["content"].startswith("Permission to use Write has been denied because Claude Code "
                                        "is running in don't ask mode.")

    def test_bypass_with_sandbox_writes(self, tmp_path):
        o = fake(SJ + ["--dangerously-skip-permissions"], stdin=directives({"write": "a.txt"}),
                 cwd=tmp_path, env=fake_env(IS_SANDBOX=1))
        assert o.returncode == 0 and (tmp_path / "a.txt").exists()
        assert o.events[0]["permissionMode"] == "bypassPermissions"

    def test_accept_edits_outside_cwd_is_denied_unless_add_dir(self, tmp_path):
        wd, other = tmp_path / "wd", tmp_path / "other"
        wd.mkdir()
        other.mkdir()
        prompt = directives({"write": str(other / "x.txt"), "content": "x"})
        o = fake(SJ + ["--permission-mode", "acceptEdits"], stdin=prompt, cwd=wd)
        assert len(o.result["permission_denials"]) == 1 and not (other / "x.txt").exists()
        o = fake(SJ + ["--permission-mode", "acceptEdits", "--add-dir", str(other)], stdin=prompt, cwd=wd)
        assert o.result["permission_denials"] == [] and (other / "x.txt").exists()

    def test_deny_action(self, tmp_path):
        o = fake(SJ + ["--permission-mode", "acceptEdits"], cwd=tmp_path,
                 stdin=directives({"deny": "Write", "path": "no.txt", "content": "x"},
                                  {"deny": "Bash", "command": "rm -rf /"}, {"text": "gave up"}))
        assert o.returncode == 0
        r = o.result
        assert r["subtype"] == "success" and r["is_error"] is False and r["result"] == "gave up"
        assert [d["tool_name"] for d in r["permission_denials"]] == ["Write", "Bash"]
        assert r["permission_denials"][1]["tool_input"]["command"] == "rm -rf /"
        assert not (tmp_path / "no.txt").exists()

    def test_scenario_from_env(self, tmp_path):
        sc = [{"action": "write", "path": "e.txt", "content": "env"}, {"action": "text", "text": "ok"}]
        o = fake(["-p", "--output-format", "json", "--permission-mode", "acceptEdits"], stdin="plain",
                 cwd=tmp_path, env=fake_env(FAKE_CLAUDE_SCENARIO=json.dumps(sc)))
        assert json.loads(o.stdout)["result"] == "ok" and (tmp_path / "e.txt").read_text() == "env"
        # directives in the prompt win over the env scenario
        o = fake(["-p", "--output-format", "json"], stdin=directives({"text": "prompt"}), cwd=tmp_path,
                 env=fake_env(FAKE_CLAUDE_SCENARIO=json.dumps(sc)))
        assert json.loads(o.stdout)["result"] == "prompt"

    def test_text_output_and_stderr_action(self, tmp_path):
        o = fake(["-p"], stdin=directives({"stderr": "some warning\n"}, {"text": "final"}), cwd=tmp_path)
        assert o.returncode == 0 and o.stdout == "final\n" and o.stderr == "some warning\n"

    def test_exit_action(self, tmp_path):
        o = fake(SJ, stdin=directives({"exit": 3, "stderr": "Segmentation fault\n"}), cwd=tmp_path)
        assert o.returncode == 3 and o.stderr == "Segmentation fault\n"
        assert o.types() == ["system/init"]
        o = fake(["-p", "--output-format", "json"], stdin=directives({"exit": None}), cwd=tmp_path)
        assert o.returncode == 1 and o.stdout == ""

    def test_api_retry_events(self, tmp_path):
        o = fake(SJ, stdin=directives({"api_retry": 2, "status": 429}, {"text": "ok"}), cwd=tmp_path,
                 env=fake_env(CLAUDE_CODE_MAX_RETRIES=5))
        retries = [e for e in o.events if e.get("subtype") == "api_retry"]
        assert [(e["attempt"], e["max_retries"], e["error_status"], e["error"]) for e in retries] == \
            [(1, 5, 429, "rate_limit"), (2, 5, 429, "rate_limit")]
        assert all(e["retry_delay_ms"] > 0 for e in retries)
        assert o.result["is_error"] is False

    def test_run_action_nests_a_fake(self, tmp_path):
        log = tmp_path / "log"
        inner = [sys.executable, FAKE_RUN, "-p", "--output-format", "json", "inner task"]
        o = fake(SJ, stdin=directives({"run": inner, "cwd": "."}), cwd=tmp_path,
                 env=fake_env(FAKE_CLAUDE_LOG=log))
        assert o.returncode == 0, o.stderr
        bash = [e for e in o.events if e["type"] == "assistant"][0]["message"]["content"][0]
        assert bash["name"] == "Bash" and "inner task" in bash["input"]["command"]
        assert json.loads(o.result["result"])["result"] == "fake claude did: inner task"
        recs = [json.loads(line) for line in (log / "invocations.jsonl").read_text().splitlines()]
        assert len(recs) == 2
        outer, nested = recs
        assert nested["ppid"] == outer["pid"] and nested["argv"][-1] == "inner task"

    def test_run_action_failure_is_a_tool_error(self, tmp_path):
        o = fake(SJ, stdin=directives({"run": [sys.executable, "-c", "import sys; print('x'); sys.exit(4)"]}),
                 cwd=tmp_path)
        tr = [e for e in o.events if e["type"] == "user"][0]
        assert tr["message"]["content"][0]["is_error"] is True
        assert tr["tool_use_result"]["exitCode"] == 4 and o.returncode == 0

    def test_wait_for_file_and_touch_file(self, tmp_path):
        p = start_fake(SJ, directives({"touch_file": "started"}, {"wait_for_file": "go"},
                                      {"text": "went"}), tmp_path)
        try:
            wait_until(lambda: (tmp_path / "started").exists(), what="marker")
            assert p.poll() is None  # blocked on "go"
            (tmp_path / "go").write_text("")
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == 0
        assert json.loads(out.splitlines()[-1])["result"] == "went"

    def test_wait_for_file_timeout(self, tmp_path):
        o = fake(SJ, stdin=directives({"wait_for_file": "never", "timeout": 0.05}), cwd=tmp_path)
        assert o.returncode == 1 and "timed out" in o.stderr

    def test_hang_with_child_dies_with_its_process_group(self, tmp_path):
        p = start_fake(SJ, directives({"hang": True, "child": True, "pidfile": "pids.json"}), tmp_path,
                       start_new_session=True)
        pids = {}
        try:
            wait_until(lambda: (tmp_path / "pids.json").exists(), what="pidfile")
            pids = json.loads((tmp_path / "pids.json").read_text())
            assert pids["pid"] == p.pid
            assert os.getpgid(pids["child_pid"]) == os.getpgid(p.pid) == p.pid
            assert p.poll() is None and pid_alive(pids["child_pid"])
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)
            wait_until(lambda: not pid_alive(pids["child_pid"]), what="child to die")
        finally:
            for pid in (p.pid, pids.get("child_pid")):
                if pid and pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            p.stdout.close()
            p.stderr.close()
        assert p.returncode == -signal.SIGTERM

    def test_invocation_log(self, tmp_path):
        log = tmp_path / "log"
        env = fake_env(FAKE_CLAUDE_LOG=log, KLAUSS_WORKER="w1", ANTHROPIC_MODEL="m",
                       CLAUDE_CODE_MAX_RETRIES=0, UNRELATED_VAR="no")
        prompt = directives({"wait_for_file": "go"})
        p = start_fake(SJ + ["--model", "x"], prompt, tmp_path, env=env)
        try:
            logf = log / "invocations.jsonl"
            # the record is written before the scenario runs (the fake is blocked on "go")
            wait_until(lambda: logf.exists() and logf.read_text().endswith("\n"), what="log line")
            assert p.poll() is None
            rec = json.loads(logf.read_text())
            (tmp_path / "go").write_text("")
            p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
        assert rec["argv"] == SJ + ["--model", "x"]
        assert rec["cwd"] == str(tmp_path) and rec["pid"] == p.pid
        assert rec["pgid"] == os.getpgid(0)  # inherited our process group
        assert rec["stdin"] == prompt and rec["prompt"] == prompt
        assert rec["env"]["KLAUSS_WORKER"] == "w1" and rec["env"]["ANTHROPIC_MODEL"] == "m"
        assert rec["env"]["CLAUDE_CODE_MAX_RETRIES"] == "0" and "UNRELATED_VAR" not in rec["env"]
        # bad invocations are logged too (without stdin)
        fake(["-p", "--bogus"], stdin="x", env=env)
        last = json.loads(logf.read_text().splitlines()[-1])
        assert last["argv"] == ["-p", "--bogus"] and last["stdin"] is None

    def test_max_turns_flag(self, tmp_path):
        o = fake(SJ + ["--permission-mode", "acceptEdits", "--max-turns", "1"], cwd=tmp_path,
                 stdin=directives({"write": "a.txt"}, {"write": "b.txt"}))
        assert o.returncode == 1
        r = o.result
        assert r["subtype"] == "error_max_turns" and r["is_error"] is True and "result" not in r
        assert r["errors"] == ["Reached maximum number of turns (1)"]
        assert r["terminal_reason"] == "max_turns" and r["num_turns"] == 2
        assert (tmp_path / "a.txt").exists() and not (tmp_path / "b.txt").exists()
        t = fake(["-p", "--permission-mode", "acceptEdits", "--max-turns", "1"], cwd=tmp_path,
                 stdin=directives({"write": "a.txt"}, {"write": "b.txt"}))
        assert t.returncode == 1 and t.stdout == "Error: Reached max turns (1)"

    def test_max_budget_flag(self, tmp_path):
        o = fake(SJ + ["--permission-mode", "acceptEdits", "--max-budget-usd", "0.01"], cwd=tmp_path,
                 stdin=directives({"write": "a.txt"}, {"text": "x"}))
        assert o.returncode == 1
        r = o.result
        assert r["subtype"] == "error_max_budget_usd" and "result" not in r
        assert r["errors"] == ["Reached maximum budget ($0.01)"] and r["terminal_reason"] == "budget_exhausted"
        assert not (tmp_path / "a.txt").exists()  # stopped before running the tool

    def test_sessions_with_state_dir(self, tmp_path):
        env = fake_env(FAKE_CLAUDE_STATE_DIR=tmp_path / "state")
        sid = "11111111-2222-4333-8444-555555555555"
        assert fake(SJ + ["--session-id", sid], stdin="a", cwd=tmp_path, env=env).returncode == 0
        again = fake(SJ + ["--session-id", sid], stdin="a", cwd=tmp_path, env=env)
        assert again.returncode == 1 and again.stderr == "Error: Session ID %s is already in use.\n" % sid
        res = fake(SJ + ["--resume", sid], stdin="b", cwd=tmp_path, env=env)
        assert res.returncode == 0 and res.result["session_id"] == sid
        fork = fake(SJ + ["--resume", sid, "--fork-session"], stdin="b", cwd=tmp_path, env=env)
        assert fork.result["session_id"] != sid
        unknown = "22222222-2222-4333-8444-555555555555"
        miss = fake(SJ + ["--resume", unknown], stdin="b", cwd=tmp_path, env=env)
        assert miss.returncode == 1
        assert miss.stderr == "No conversation found with session ID: %s\n" % unknown
        assert miss.types() == ["result"] and miss.result["subtype"] == "error_during_execution"
        nop = fake(SJ + ["--no-session-persistence"], stdin="c", cwd=tmp_path, env=env)
        files = os.listdir(os.path.dirname(next(
            os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "state") for f in fs)))
        assert nop.result["session_id"] + ".jsonl" not in files

    @pytest.mark.skipif(not os.path.exists(PY39), reason="python 3.9 not installed at " + PY39)
    def test_runs_under_python39(self, tmp_path):
        o = fake(SJ + ["--permission-mode", "acceptEdits"], python=PY39, cwd=tmp_path,
                 stdin=directives({"write": "a.txt", "content": "39"}, {"error": "usage_limit",
                                                                         "resets_at": 1800000000}))
        assert o.returncode == 1 and (tmp_path / "a.txt").read_text() == "39"
        assert o.result["api_error"] == "usage_limit_reached"
        assert fake(["--version"], python=PY39, stdin=None).stdout == "2.1.197 (Claude Code)\n"


# kind -> (api_error_status, api_error_type, synthetic error, result prefix, terminal_reason)
API_ERRORS = {
    "not_logged_in": (None, None, "authentication_failed", "Not logged in \u00b7 Please run /login", "api_error"),
    "invalid_api_key": (401, "authentication_error", "authentication_failed",
                        "Invalid API key \u00b7 Fix external API key", "api_error"),
    "rate_limit": (429, "rate_limit_error", "rate_limit", "API Error: Request rejected (429) \u00b7 ",
                   "api_error"),
    "overloaded": (529, "overloaded_error", "server_error", "API Error: 529 Overloaded.", "api_error"),
    "server_error": (500, "api_error", "server_error", "API Error: 500 Internal server error.", "api_error"),
    "connection_failed": (None, None, "server_error", "API Error: Can't reach the API server", "api_error"),
    "billing": (400, "invalid_request_error", "billing_error", "Credit balance is too low", "api_error"),
    "model_not_found": (404, "not_found_error", "model_not_found",
                        "There's an issue with the selected model (claude-x)", "api_error"),
    "prompt_too_long": (400, "invalid_request_error", "invalid_request", "Prompt is too long \u00b7 ",
                        "prompt_too_long"),
}


class TestFakeErrors:
    @pytest.mark.parametrize("kind", sorted(API_ERRORS))
    def test_api_error_shapes(self, kind, tmp_path):
        status, etype, synth, prefix, terminal = API_ERRORS[kind]
        o = fake(SJ + ["--model", "claude-x"], stdin=directives({"error": kind}), cwd=tmp_path)
        assert o.returncode == 1
        assert o.types() == ["system/init", "assistant", "result"]
        a = o.events[1]
        assert a["message"]["model"] == "<synthetic>" and a["error"] == synth
        assert a["is_api_error_message"] is True
        assert a["message"]["content"][0]["text"].startswith(prefix)
        r = o.result
        assert r["subtype"] == "success" and r["is_error"] is True
        assert r["api_error_status"] == status and r.get("api_error_type") == etype
        assert r["result"].startswith(prefix) and r["terminal_reason"] == terminal
        assert r["stop_reason"] == "stop_sequence" and r["num_turns"] == 1
        if kind == "connection_failed":
            assert r["api_error"] == "connection_failed"
        # json: one object; text: the message on stdout
        j = fake(["-p", "--output-format", "json", "--model", "claude-x"], stdin=directives({"error": kind}),
                 cwd=tmp_path)
        assert j.returncode == 1 and json.loads(j.stdout)["result"] == r["result"]
        t = fake(["-p", "--model", "claude-x"], stdin=directives({"error": kind}), cwd=tmp_path)
        assert t.returncode == 1 and t.stdout.startswith(prefix)

    def test_error_after_work_counts_turns_and_cost(self, tmp_path):
        o = fake(SJ + ["--permission-mode", "acceptEdits"], cwd=tmp_path,
                 stdin=directives({"write": "a.txt"}, {"error": "overloaded", "message": "custom"}))
        r = o.result
        assert r["num_turns"] == 2 and r["total_cost_usd"] == pytest.approx(0.0123)
        assert r["result"] == "custom" and (tmp_path / "a.txt").exists()

    def test_usage_limit(self, tmp_path):
        resets = 1800000000  # 2027-01-15 08:00 UTC
        o = fake(SJ, stdin=directives({"error": "usage_limit", "resets_at": resets}), cwd=tmp_path)
        assert o.returncode == 1
        assert o.types() == ["system/init", "rate_limit_event", "assistant", "result"]
        info = o.events[1]["rate_limit_info"]
        assert info["status"] == "rejected" and info["resetsAt"] == resets
        assert info["rateLimitType"] == "five_hour"
        r = o.result
        assert r["is_error"] is True and r["subtype"] == "success"
        assert r["api_error_status"] == 429 and r["api_error_type"] == "rate_limit_error"
        assert r["api_error"] == "usage_limit_reached"
        assert r["result"] == "You've hit your 5-hour limit \u00b7 resets 8:00am (UTC)"
        assert o.events[2]["error"] == "rate_limit"

    def test_error_subtypes(self, tmp_path):
        for kind, subtype, terminal in (("max_turns", "error_max_turns", "max_turns"),
                                        ("max_budget", "error_max_budget_usd", "budget_exhausted"),
                                        ("during_execution", "error_during_execution", None)):
            o = fake(SJ, stdin=directives({"error": kind}), cwd=tmp_path)
            assert o.returncode == 1
            r = o.result
            assert r["subtype"] == subtype and r["is_error"] is True and "result" not in r
            assert isinstance(r["errors"], list) and r["errors"][0]
            assert r.get("terminal_reason") == terminal

    def test_bad_scenario(self, tmp_path):
        o = fake(SJ, stdin="@fake {\"nonsense\": 1}\n", cwd=tmp_path)
        assert o.returncode == 2 and "bad scenario" in o.stderr


# =========================================================================== messages server
def post(url, body, headers=None):
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=dict({"content-type": "application/json"},
                                                             **(headers or {})), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def sse_events(raw):
    out = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk.strip():
            continue
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


MAIN = {"model": "claude-test", "max_tokens": 1000, "tools": [{"name": "Write"}],
        "messages": [{"role": "user", "content": "hi"}]}


class TestMessagesServer:
    def test_non_streaming_text(self):
        with ms.MessagesServer(script=[ms.text("hello")]) as srv:
            st, _, body = post(srv.url + "/v1/messages?beta=true", MAIN)
        assert st == 200
        m = json.loads(body)
        assert m["type"] == "message" and m["role"] == "assistant" and m["model"] == "claude-test"
        assert m["content"] == [{"type": "text", "text": "hello"}] and m["stop_reason"] == "end_turn"
        assert m["usage"]["input_tokens"] == 100

    def test_streaming_tool_use(self):
        inp = {"file_path": "/tmp/x" * 30, "content": "some content " * 20}
        with ms.MessagesServer(script=[ms.tool_use("Write", inp, text="writing")]) as srv:
            st, headers, raw = post(srv.url + "/v1/messages", dict(MAIN, stream=True))
        assert st == 200 and headers["content-type"] == "text/event-stream"
        ev = sse_events(raw)
        names = [e for e, _ in ev]
        assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
        assert ev[0][1]["message"]["content"] == []
        starts = [d for e, d in ev if e == "content_block_start"]
        assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use"]
        assert starts[1]["content_block"]["name"] == "Write" and starts[1]["content_block"]["input"] == {}
        pj = "".join(d["delta"]["partial_json"] for e, d in ev
                     if e == "content_block_delta" and d["delta"]["type"] == "input_json_delta")
        assert json.loads(pj) == inp
        txt = "".join(d["delta"]["text"] for e, d in ev
                      if e == "content_block_delta" and d["delta"]["type"] == "text_delta")
        assert txt == "writing"
        assert names.count("content_block_stop") == 2
        assert ev[-2][1]["delta"]["stop_reason"] == "tool_use"
        assert ev[-2][1]["usage"]["output_tokens"] == 20

    @pytest.mark.parametrize("step,status,etype", [
        (ms.error(401), 401, "authentication_error"),
        ("status 429", 429, "rate_limit_error"),
        (ms.error(529), 529, "overloaded_error"),
        (ms.error(500), 500, "api_error"),
        (ms.prompt_too_long(), 400, "invalid_request_error"),
        (ms.credit_balance_too_low(), 400, "invalid_request_error"),
        (ms.model_not_found(), 404, "not_found_error"),
    ])
    def test_error_steps(self, step, status, etype):
        with ms.MessagesServer(script=[step]) as srv:
            st, headers, body = post(srv.url + "/v1/messages", dict(MAIN, stream=True))
        assert st == status
        b = json.loads(body)
        assert b["type"] == "error" and b["error"]["type"] == etype and b["error"]["message"]
        assert b["request_id"].startswith("req_")
        if status == 429:
            assert headers["retry-after"] == "0"
        if status == 404:
            assert b["error"]["message"] == "model: claude-test"
        assert srv.requests[-1]["status"] == status

    def test_streaming_404_fallback_reuses_the_step(self):
        with ms.MessagesServer(script=[ms.model_not_found(), ms.text("next")]) as srv:
            assert post(srv.url + "/v1/messages", dict(MAIN, stream=True))[0] == 404
            assert post(srv.url + "/v1/messages", MAIN)[0] == 404  # the CLI's non-streaming retry
            assert json.loads(post(srv.url + "/v1/messages", MAIN)[2])["content"][0]["text"] == "next"
        assert [r["step"] for r in srv.main_requests] == [0, 0, 1]

    def test_side_requests_do_not_consume_steps(self):
        with ms.MessagesServer(script=[ms.text("main answer")]) as srv:
            side = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "x"}]}
            st, _, body = post(srv.url + "/v1/messages", side)
            assert json.loads(body)["content"][0]["text"] == "OK"
            quota = dict(MAIN, max_tokens=1)
            assert post(srv.url + "/v1/messages", quota)[0] == 200
            classifier = dict(side, system=[{"type": "text", "text": "You are a security monitor for "
                                             "autonomous AI coding agents. ... <block>no</block>"}])
            assert json.loads(post(srv.url + "/v1/messages", classifier)[2])["content"][0]["text"] == \
                "<block>no</block>"
            no_tools_main = dict(MAIN, tools=[], stream=True)  # claude --tools ""
            assert "main answer" in post(srv.url + "/v1/messages", no_tools_main)[2].decode()
        assert [r["kind"] for r in srv.requests] == ["side", "side", "side", "main"]
        assert srv.steps_used == 1 and not srv.exhausted

    def test_exhausted_script_and_string_steps(self):
        with ms.MessagesServer(script=['tool_use Write {"file_path": "/a", "content": "b"}',
                                       "text 'done'"], default_text="fallback") as srv:
            first = json.loads(post(srv.url + "/v1/messages", MAIN)[2])
            assert first["content"][0]["input"] == {"file_path": "/a", "content": "b"}
            assert first["stop_reason"] == "tool_use"
            assert json.loads(post(srv.url + "/v1/messages", MAIN)[2])["content"][0]["text"] == "done"
            assert not srv.exhausted
            assert json.loads(post(srv.url + "/v1/messages", MAIN)[2])["content"][0]["text"] == "fallback"
            assert srv.exhausted

    def test_count_tokens_head_and_unknown(self):
        with ms.MessagesServer() as srv:
            st, _, body = post(srv.url + "/v1/messages/count_tokens?beta=true", MAIN)
            assert st == 200 and json.loads(body)["input_tokens"] > 0
            req = urllib.request.Request(srv.url + "/", method="HEAD")
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200
            assert post(srv.url + "/v1/other", {})[0] == 404
        assert [r["kind"] for r in srv.requests] == ["count_tokens", "other", "other"]
        assert srv.main_requests == [] and srv.requests[0]["body"] == MAIN

    def test_callable_step_and_records(self):
        seen = []

        def step(rec):
            seen.append(rec["body"]["messages"][-1]["content"])
            return ms.text("echo: %s" % seen[-1])

        with ms.MessagesServer(script=[step]) as srv:
            body = json.loads(post(srv.url + "/v1/messages", MAIN, {"x-api-key": "k"})[2])
        assert body["content"][0]["text"] == "echo: hi"
        rec = srv.requests[0]
        assert rec["headers"]["x-api-key"] == "k" and rec["path"] == "/v1/messages"
        assert rec["kind"] == "main" and rec["step"] == 0 and rec["status"] == 200

    def test_stream_error_event(self):
        with ms.MessagesServer(script=[ms.stream_error()]) as srv:
            st, _, raw = post(srv.url + "/v1/messages", dict(MAIN, stream=True))
        assert st == 200
        ev = sse_events(raw)
        assert [e for e, _ in ev] == ["message_start", "error"]
        assert ev[1][1]["error"]["type"] == "overloaded_error"


# =========================================================================== real CLI
def run_real(exe, tmp_path, script, args=("--permission-mode", "acceptEdits"), prompt="do the task",
             oauth=False):
    wd = tmp_path / "wd"
    wd.mkdir()
    script = [s(wd) if callable(s) and not isinstance(s, dict) else s for s in script]
    with ms.MessagesServer(script=script) as srv:
        env = real_cli.real_claude_env(srv.url, tmp_path / "home", oauth=oauth)
        run = real_cli.run_real_claude(exe, prompt, wd, env, args=args, timeout=120)
    return run, srv, wd


def write_step(name="out.txt", content="hello from the real cli\n"):
    return lambda wd: ms.tool_use("Write", {"file_path": str(wd / name), "content": content})


@pytest.fixture(scope="class")
def real_write(real_claude, tmp_path_factory):
    """One real run that writes a file then answers, for the tests that only read it."""
    return run_real(real_claude, tmp_path_factory.mktemp("real-write"), [write_step(), ms.text("done")])


@pytest.fixture(scope="class")
def real_401(real_claude, tmp_path_factory):
    """One real run whose API key is refused, for the tests that only read it."""
    return run_real(real_claude, tmp_path_factory.mktemp("real-401"), [ms.error(401)])


class TestRealCli:
    def test_write(self, real_write):
        run, srv, wd = real_write
        assert run.returncode == 0, run
        assert (wd / "out.txt").read_text() == "hello from the real cli\n"
        types = [e["type"] for e in run.events]
        assert types[0] == "system" and types[-1] == "result"
        assert types == ["system", "assistant", "user", "assistant", "result"]
        init = run.events[0]
        assert init["subtype"] == "init" and init["cwd"] == str(wd)
        assert init["permissionMode"] == "acceptEdits"
        assert init["claude_code_version"] == real_cli.PINNED_VERSION or os.environ.get("KLAUSS_REAL_CLAUDE")
        r = run.result
        assert r["is_error"] is False and r["subtype"] == "success" and r["result"] == "done"
        assert r["session_id"] == init["session_id"]
        assert isinstance(r["total_cost_usd"], (int, float)) and r["total_cost_usd"] > 0
        assert r["num_turns"] == 2 and r["permission_denials"] == []
        # the second main request carries the tool_result of the first
        main = srv.main_requests
        assert len(main) == 2
        last = main[1]["body"]["messages"][-1]
        assert any(b.get("type") == "tool_result" for b in last["content"])
        assert main[0]["headers"]["x-api-key"] == real_cli.TEST_API_KEY
        assert srv.side_requests == []

    def test_default_mode_denies_write(self, real_claude, tmp_path):
        run, srv, wd = run_real(real_claude, tmp_path, [write_step(), ms.text("done")],
                                args=("--permission-mode", "default"))
        assert run.returncode == 0, run
        r = run.result
        assert r["is_error"] is False and not (wd / "out.txt").exists()
        assert [d["tool_name"] for d in r["permission_denials"]] == ["Write"]

    def test_401(self, real_401):
        run, srv, wd = real_401
        assert run.returncode == 1, run
        r = run.result
        assert r["is_error"] is True and r["subtype"] == "success"
        assert r["api_error_status"] == 401
        assert r["result"] == "Invalid API key \u00b7 Fix external API key"
        synth = [e for e in run.events if e["type"] == "assistant"][-1]
        assert synth["message"]["model"] == "<synthetic>" and synth["error"] == "authentication_failed"

    def test_429(self, real_claude, tmp_path):
        run, srv, wd = run_real(real_claude, tmp_path, [ms.error(429)])
        assert run.returncode == 1, run
        r = run.result
        assert r["is_error"] is True and r["subtype"] == "success"
        assert r["api_error_status"] == 429
        assert r["result"].startswith("API Error: Request rejected (429) \u00b7 This request would exceed")
        synth = [e for e in run.events if e["type"] == "assistant"][-1]
        assert synth["error"] == "rate_limit"
        assert len(srv.main_requests) == 1  # CLAUDE_CODE_MAX_RETRIES=0: no retry

    def test_subscription_usage_limit(self, real_claude, tmp_path):
        resets = int(time.time()) + 7200
        run, srv, wd = run_real(real_claude, tmp_path, [ms.usage_limit(resets)], oauth=True)
        assert run.returncode == 1, run
        types = [e["type"] for e in run.events]
        assert types == ["system", "rate_limit_event", "assistant", "result"]
        info = run.events[1]["rate_limit_info"]
        assert info["status"] == "rejected" and info["resetsAt"] == resets
        assert info["rateLimitType"] == "five_hour"
        r = run.result
        assert r["is_error"] is True and r["api_error_status"] == 429
        assert r["result"].startswith("You've hit your ")  # 2.1.197: "session limit", 2.1.329: "5-hour limit"
        assert "authorization" in srv.main_requests[0]["headers"]

    def test_fake_matches_real_shapes(self, real_write, real_401, tmp_path):
        """The fake's events carry no key the real CLI lacks (apart from newer-version extras)."""
        run, _, _ = real_write
        fk = fake(SJ + ["--permission-mode", "acceptEdits"], cwd=tmp_path,
                  stdin=directives({"write": "f.txt", "content": "x"}, {"text": "done"}))
        assert [e["type"] for e in fk.events] == [e["type"] for e in run.events]
        for f_ev, r_ev in zip(fk.events, run.events):
            assert set(f_ev) <= set(r_ev), (f_ev["type"], set(f_ev) - set(r_ev))
        assert set(fk.result["usage"]) <= set(run.result["usage"])
        err, _, _ = real_401
        fe = fake(SJ, stdin=directives({"error": "invalid_api_key"}), cwd=tmp_path)
        newer = {"api_error_type", "api_error", "is_api_error_message", "api_error_status"}  # 2.1.329
        assert set(fe.result) - newer <= set(err.result)
        assert fe.result["result"] == err.result["result"]
        assert set(fe.events[1]) - newer <= set(err.events[1])


@pytest.mark.parametrize("version", [None, "", "2.1.400"])
def test_the_installed_fakes_shell_answer_to_version_is_the_fakes_own(tmp_path, version):
    claude = install_fake_claude(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_CLAUDE")}
    if version is not None:
        env["FAKE_CLAUDE_VERSION"] = version
    by_shell = subprocess.run([str(claude), "--version"], env=env, capture_output=True, text=True)
    by_fake = subprocess.run([sys.executable, str(FAKE), "--version"], env=env, capture_output=True, text=True)
    assert (by_shell.returncode, by_shell.stdout, by_shell.stderr) == (0, by_fake.stdout, "") and by_fake.returncode == 0
