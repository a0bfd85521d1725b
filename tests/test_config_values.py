"""config.py refuses numbers that would break timers: nan, inf and negatives (issue 13, item 6)."""

import pytest

from config import ConfigError, load_config

NUMERIC_KEYS = [
    ("workers", "lease_seconds"), ("workers", "heartbeat_seconds"), ("workers", "poll_seconds"),
    ("workers", "idle_timeout"), ("workers", "shutdown_grace_seconds"), ("workers", "restart_backoff_max_seconds"),
    ("queue", "retry_backoff_seconds"), ("queue", "retry_backoff_max_seconds"),
    ("claude", "timeout"), ("claude", "max_budget_usd"),
]


@pytest.mark.parametrize("section, key", NUMERIC_KEYS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_non_finite_and_negative_numbers_are_refused_naming_file_and_key(tmp_path, section, key, value):
    path = tmp_path / ".klauss.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cwd=tmp_path, env={})
    message = str(err.value)
    assert message.startswith(f"{path}: {section}.{key}: expected a ") and "\n" not in message
    assert "number" in message


@pytest.mark.parametrize("section, key", [("workers", "count"), ("workers", "max_fast_crashes"),
                                          ("queue", "max_attempts"), ("claude", "max_turns")])
def test_integer_counts_must_be_positive(tmp_path, section, key):
    (tmp_path / ".klauss.toml").write_text(f"[{section}]\n{key} = 0\n")
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: expected a number > 0, got 0"):
        load_config(cwd=tmp_path, env={})


def test_arguments_are_checked_too(tmp_path):
    with pytest.raises(ConfigError, match=r"arguments: claude\.timeout: expected a number > 0, got nan"):
        load_config(cwd=tmp_path, env={}, overrides={"claude.timeout": float("nan")})


def test_zero_stays_allowed_where_it_means_something(tmp_path):
    (tmp_path / ".klauss.toml").write_text(
        "[workers]\nidle_timeout = 0\nrestart_backoff_max_seconds = 0\nshutdown_grace_seconds = 0\n"
        "[queue]\nretry_backoff_seconds = 0\nretry_backoff_max_seconds = 0\n")
    cfg = load_config(cwd=tmp_path, env={})
    assert cfg["workers"]["idle_timeout"] == 0 and cfg["queue"]["retry_backoff_max_seconds"] == 0
