"""config.py: precedence, validation messages, project root and state directory resolution."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

import config
from config import ConfigError, load_config


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "GIT_ALLOW_PROTOCOL": "file"})


def make_repo(path):
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main", cwd=path)
    (path / "README").write_text("x")
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "init", cwd=path)
    return path


def test_defaults_outside_git(tmp_path):
    cfg = load_config(cwd=tmp_path, env={})
    assert cfg.root == tmp_path.resolve()
    assert cfg.state_dir == tmp_path.resolve() / ".klauss"
    assert cfg.db_path == cfg.state_dir / "claude_tasks.db"
    assert cfg["workers"]["count"] == 4 and cfg["claude"]["permission_mode"] == "acceptEdits"
    assert cfg.config_file is None


def test_precedence_defaults_file_env_arguments(tmp_path):
    (tmp_path / ".klauss.toml").write_text("[workers]\ncount = 6\nlease_seconds = 30\n[claude]\nmodel = \"sonnet\"\n")
    cfg = load_config(cwd=tmp_path, env={})
    assert (cfg["workers"]["count"], cfg["workers"]["lease_seconds"], cfg["claude"]["model"]) == (6, 30, "sonnet")
    cfg = load_config(cwd=tmp_path, env={"KLAUSS_WORKERS": "3", "KLAUSS_CLAUDE": "/opt/claude"})
    assert cfg["workers"]["count"] == 3 and cfg["claude"]["command"] == "/opt/claude"
    cfg = load_config(cwd=tmp_path, env={"KLAUSS_WORKERS": "3"}, overrides={"workers.count": 2, "claude": {"model": None}})
    assert cfg["workers"]["count"] == 2
    assert cfg["claude"]["model"] == "sonnet", "an override of None means 'not given'"


def test_klauss_config_names_another_file(tmp_path):
    other = tmp_path / "elsewhere.toml"
    other.write_text("[queue]\nmax_attempts = 7\n")
    assert load_config(cwd=tmp_path, env={"KLAUSS_CONFIG": str(other)})["queue"]["max_attempts"] == 7
    with pytest.raises(ConfigError, match="KLAUSS_CONFIG: .*missing.toml does not exist"):
        load_config(cwd=tmp_path, env={"KLAUSS_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize("text, message", [
    ("[workers]\ncuont = 3\n", r"\.klauss\.toml: unknown key workers\.cuont \(known in \[workers\]: .*count"),
    ("[wrokers]\ncount = 3\n", r"\.klauss\.toml: unknown section \[wrokers\]"),
    ("[workers]\ncount = \"four\"\n", r"\.klauss\.toml: workers\.count: expected an integer, got 'four'"),
    ("[workers]\nauto_start = 1\n", r"workers\.auto_start: expected true or false"),
    ("[claude]\nallowed_tools = \"Edit\"\n", r"claude\.allowed_tools: expected a list"),
    ("[claude]\npermission_mode = \"yolo\"\n", r"claude\.permission_mode: expected one of acceptEdits"),
    ("[workers]\nlease_seconds = 0\n", r"workers\.lease_seconds: expected a number > 0"),
    ("[workers\n", r"invalid TOML"),
])
def test_bad_config_names_file_key_and_expectation(tmp_path, text, message):
    (tmp_path / ".klauss.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(cwd=tmp_path, env={})


def test_bad_environment_value(tmp_path):
    with pytest.raises(ConfigError, match="KLAUSS_WORKERS: expected an integer, got 'many'"):
        load_config(cwd=tmp_path, env={"KLAUSS_WORKERS": "many"})
    with pytest.raises(ConfigError, match="KLAUSS_AUTO_START: expected true or false"):
        load_config(cwd=tmp_path, env={"KLAUSS_AUTO_START": "maybe"})
    assert load_config(cwd=tmp_path, env={"KLAUSS_AUTO_START": "no"})["workers"]["auto_start"] is False


def test_same_database_from_any_directory_of_a_repo(tmp_path):
    repo = make_repo(tmp_path / "proj")
    (repo / "src" / "deep").mkdir(parents=True)
    seen = {load_config(cwd=d, env={}).db_path for d in (repo, repo / "src", repo / "src" / "deep")}
    assert seen == {repo.resolve() / ".klauss" / "claude_tasks.db"}


def test_klauss_as_submodule_resolves_to_the_superproject(tmp_path, monkeypatch):
    klauss_src = make_repo(tmp_path / "klauss-src")
    project = make_repo(tmp_path / "project")
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(klauss_src), "klauss", cwd=project)
    submodule = project / "klauss"
    monkeypatch.setattr(config, "KLAUSS_DIR", submodule)
    for cwd in (project, submodule, project / "klauss"):
        assert load_config(cwd=cwd, env={}).root == project.resolve()


def test_a_project_that_is_itself_a_submodule_keeps_its_own_root(tmp_path, monkeypatch):
    inner = make_repo(tmp_path / "inner-src")
    outer = make_repo(tmp_path / "outer")
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(inner), "inner", cwd=outer)
    monkeypatch.setattr(config, "KLAUSS_DIR", tmp_path / "somewhere-else")
    assert load_config(cwd=outer / "inner", env={}).root == (outer / "inner").resolve()


def test_explicit_db_keeps_state_beside_it(tmp_path):
    cfg = load_config(db="data/my.db", cwd=tmp_path, env={})
    assert cfg.db_path == tmp_path / "data" / "my.db" and cfg.state_dir == tmp_path / "data" / "my.db.klauss"
    cfg = load_config(cwd=tmp_path, env={"KLAUSS_DB": str(tmp_path / "env.db")})
    assert cfg.db_path == tmp_path / "env.db"
    assert load_config(db="a.db", cwd=tmp_path, env={"KLAUSS_DB": "b.db"}).db_path.name == "a.db"


def test_state_dir_from_config_is_relative_to_the_file(tmp_path):
    (tmp_path / ".klauss.toml").write_text("[paths]\nstate_dir = \"var/klauss\"\n")
    cfg = load_config(cwd=tmp_path, env={})
    assert cfg.state_dir == tmp_path / "var" / "klauss" and cfg.db_path == cfg.state_dir / "claude_tasks.db"


def test_state_dir_is_private(tmp_path):
    cfg = load_config(cwd=tmp_path, env={})
    cfg.ensure_state_dir()
    for d in (cfg.state_dir, cfg.logs_dir):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert (cfg.state_dir / ".gitignore").read_text().splitlines()[-1] == "*", "state is never committed"


def test_rendered_default_config_parses_back_to_the_defaults(tmp_path):
    (tmp_path / ".klauss.toml").write_text(config.render_default_config())
    cfg = load_config(cwd=tmp_path, env={})
    (tmp_path / "empty").mkdir()
    defaults = load_config(cwd=tmp_path / "empty", env={})
    assert cfg.data == defaults.data
    text = config.render_default_config()
    assert "lease_seconds = 60" in text and "heartbeat_seconds = 10" in text


def test_tomli_is_the_only_runtime_requirement():
    lines = [line.strip() for line in (Path(config.__file__).parent / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines == ['tomli>=1.1; python_version < "3.11"']
