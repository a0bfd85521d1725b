"""The data every part shares is named once: exit codes in exits.py, pool flag names in flags.py,
worker and pool states in states.py, timings derived from lease_seconds in config."""

import os
import re
from pathlib import Path

import claude_cli
import claude_queue
import claude_worker
import config
import exits
import outcome as outcome_type
import states
from conftest import install_fake_claude

ROOT = Path(__file__).resolve().parent.parent


def test_one_set_of_exit_codes():
    assert (exits.EXIT_OK, exits.EXIT_FAIL, exits.EXIT_USAGE, exits.EXIT_CONFIG, exits.EXIT_INTERRUPTED) == \
        (0, 1, 2, 3, 130)
    for path in ROOT.glob("*.py"):
        if path.name == "exits.py":
            continue
        text = path.read_text()
        own = re.findall(r"^EXIT_[A-Z_]+(?:, EXIT_[A-Z_]+)* = \d", text, re.M)
        assert not own, f"{path.name} defines its own exit codes: {own}; use exits.EXIT_*"
        assert not re.search(r"\breturn 130\b|, 130\)", text), f"{path.name}: use exits.EXIT_INTERRUPTED"


def test_flags_are_named_not_spelled():
    for path in ROOT.glob("*.py"):
        literal = re.findall(r"_flag\(\s*[\"'][a-z_]+[\"']", path.read_text())
        assert not literal, f"{path.name} spells a pool flag's name: {literal}; use flags.py"


def test_states_are_named_not_spelled():
    words = "|".join(sorted(set(states.WORKER_STATES + states.POOL_STATES + (states.DEAD,))))
    # A state word set, compared or returned as a state: `state="idle"`, `w["state"] == "busy"`,
    # `set_state("paused")`, `{"state": "stopped", ...}`.
    spelled = re.compile(r"(?:\bstate\b[\"']?\]?\s*(?:==|!=|=|:|\bin\b)|set_state\(|_row_written\(|"
                         r"_beat_worker\(conn, worker_id,)[^#\n]*?[\"'](?:" + words + r")[\"']")
    for path in ROOT.glob("*.py"):
        if path.name == "states.py":
            continue
        literal = [line.strip() for line in path.read_text().splitlines() if spelled.search(line)]
        assert not literal, f"{path.name} spells a worker or pool state: {literal}; use states.py"


def test_the_worker_takes_its_timings_from_config():
    text = (ROOT / "claude_worker.py").read_text()
    assert "lease / 3" not in text and "lease / 2" not in text
    assert "cfg.heartbeat_interval" in text and "cfg.recover_every" in text


def test_every_key_the_worker_records_is_a_named_outcome_key(tmp_path, monkeypatch):
    install_fake_claude(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    cfg = config.load_config(cwd=tmp_path, env={})
    q = claude_queue.TaskQueue(cfg=cfg)
    [tid] = q.add_tasks([{"prompt": "hello"}])
    worker = claude_worker.Worker("w1", q, cfg, exit_when_idle=True)
    worker.executable = claude_cli.resolve_command(cfg["claude"]["command"])
    worker.waker = claude_queue.Waker(q, "w1")
    q.register_worker("w1", state="idle", info=worker._info)
    try:
        assert worker.loop() == exits.EXIT_OK
    finally:
        worker.waker.close()
    outcome = q.get_task(tid).outcome
    assert outcome["exit_code"] == 0 and "wall_seconds" in outcome
    assert set(outcome) <= set(outcome_type.Outcome.__annotations__), set(outcome) - set(outcome_type.Outcome.__annotations__)
