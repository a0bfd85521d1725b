"""gitroot.py: the git top level found without starting git, equal to what git answers.

Every layout is a real repository made by git in tmp_path, and every answer is compared with
`git rev-parse --show-toplevel` run there. Where the layout is the usual one, the fast path must
answer by itself (no git process: see test_no_git_is_started_in_a_plain_repository); everywhere
else it must leave the answer to git.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_config import make_repo

import config
import gitroot
import validation
import worktrees
from conftest import copy_klauss

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
REAL_GIT = shutil.which("git")


@pytest.fixture(autouse=True)
def _plain_git_env(monkeypatch):
    """Whatever the environment running the tests says about git stays out of them."""
    for name in gitroot._STEERING:
        monkeypatch.delenv(name, raising=False)
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def git_top(path):
    """What git itself answers (resolved), or None where it fails."""
    cp = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True)
    return Path(cp.stdout.strip()).resolve() if cp.returncode == 0 and cp.stdout.strip() else None


def one_filesystem_up(path):
    """Whether every directory from `path` up to / is on one filesystem (git stops at a boundary,
    and the fast path leaves that to git)."""
    path = Path(path).resolve()
    return len({p.stat().st_dev for p in (path, *path.parents)}) == 1


def answers(path, fast=True):
    """Both lookups equal git's answer; with `fast`, the fast path answered by itself."""
    expected = git_top(path)
    assert gitroot.toplevel(path) == expected
    assert validation.git_toplevel(path) == expected
    assert worktrees.toplevel(path) == expected
    found = gitroot.fast_toplevel(path)
    if fast:
        assert found == expected, f"the fast path should answer for {path}"
    else:
        assert found is gitroot.ASK_GIT, f"only git can tell for {path}, the fast path said {found}"
    return expected


def test_a_repository_and_its_subdirectories(tmp_path):
    repo = make_repo(tmp_path / "proj")
    (repo / "src" / "deep").mkdir(parents=True)
    for d in (repo, repo / "src", repo / "src" / "deep"):
        assert answers(d) == repo.resolve()


def test_outside_any_repository(tmp_path):
    outside = tmp_path / "plain" / "dir"
    outside.mkdir(parents=True)
    answers(outside, fast=one_filesystem_up(outside))


def test_klauss_as_a_submodule(tmp_path):
    klauss = make_repo(tmp_path / "klauss-src")
    project = make_repo(tmp_path / "project")
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(klauss), "klauss", cwd=project)
    (project / "klauss" / "sub").mkdir()
    assert (project / "klauss" / ".git").is_file(), "a submodule's .git is a gitdir: file"
    assert answers(project) == project.resolve()
    assert answers(project / "klauss") == (project / "klauss").resolve()
    assert answers(project / "klauss" / "sub") == (project / "klauss").resolve()


def test_a_linked_worktree(tmp_path):
    repo = make_repo(tmp_path / "proj")
    git("worktree", "add", "-q", "-b", "side", str(tmp_path / "wt"), cwd=repo)
    (tmp_path / "wt" / "deep").mkdir()
    assert answers(tmp_path / "wt") == (tmp_path / "wt").resolve()
    assert answers(tmp_path / "wt" / "deep") == (tmp_path / "wt").resolve()


def test_a_symlinked_directory_into_a_repository(tmp_path):
    repo = make_repo(tmp_path / "proj")
    (repo / "src").mkdir()
    (tmp_path / "link").symlink_to(repo / "src")
    assert answers(tmp_path / "link") == repo.resolve()


def test_a_nested_repository_wins(tmp_path):
    outer = make_repo(tmp_path / "outer")
    inner = make_repo(outer / "vendor" / "inner")
    (inner / "src").mkdir()
    assert answers(inner / "src") == inner.resolve()
    assert answers(outer / "vendor") == outer.resolve()


def test_git_dir_in_the_environment_is_left_to_git(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "proj")
    (repo / "src").mkdir()
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    # With GIT_DIR and no work tree, git takes the current directory as the top level.
    assert gitroot.fast_toplevel(repo / "src") is gitroot.ASK_GIT
    assert gitroot.toplevel(repo / "src") == git_top(repo / "src") == (repo / "src").resolve()
    assert validation.git_toplevel(repo / "src") == (repo / "src").resolve()
    # worktrees runs git without an inherited GIT_DIR, as it always did.
    assert worktrees.toplevel(repo / "src") == repo.resolve()


@pytest.mark.parametrize("content", ["garbage\n", "gitdir: \n", "gitdir: /nowhere/at/all\n", ""])
def test_a_dot_git_file_git_rejects_is_left_to_git(tmp_path, content):
    repo = make_repo(tmp_path / "proj")
    (repo / "sub").mkdir()
    (repo / "sub" / ".git").write_text(content)
    answers(repo / "sub", fast=False)


def test_an_empty_dot_git_directory_is_left_to_git(tmp_path):
    """git passes over a `.git` directory that is not a repository and looks further up."""
    repo = make_repo(tmp_path / "proj")
    (repo / "sub" / ".git").mkdir(parents=True)
    assert answers(repo / "sub", fast=False) == repo.resolve()


def test_inside_the_git_directory_and_a_bare_repository_are_left_to_git(tmp_path):
    repo = make_repo(tmp_path / "proj")
    answers(repo / ".git", fast=False)
    answers(repo / ".git" / "refs" / "heads", fast=False)
    git("clone", "-q", "--bare", str(repo), str(tmp_path / "bare.git"), cwd=tmp_path)
    answers(tmp_path / "bare.git", fast=False)
    answers(tmp_path / "bare.git" / "refs", fast=False)


@pytest.mark.parametrize("key, value", [
    ("core.bare", "true"),
    ("core.worktree", "/somewhere/else"),
    ("extensions.worktreeConfig", "true"),
])
def test_a_config_that_moves_or_removes_the_work_tree_is_left_to_git(tmp_path, key, value):
    repo = make_repo(tmp_path / "proj")
    (repo / "src").mkdir()
    git("config", key, value, cwd=repo)
    answers(repo / "src", fast=False)


@pytest.mark.parametrize("extra, fast", [
    ("[a]\n\tk = v # comment\n[a.b]\n\tc\n[Core]\n\tBare = FALSE\n", True),
    ("[core]\n\tworktree = ..\n", True),  # the directory that holds .git: git answers the same
    ('[core] bare = "false"\n', False),       # a key on a section's line
    ("[ core]\n", False),                    # git: bad config line
    ('[remote "a"b"]\n', False),
    ("[a]\n\tk_x = v\n", False),
    ('[alias]\n\tl = "log\n', False),
    ("[a]\n\tk = v \\\n w\n", False),          # a value continued on the next line
    ("\tbare = false ; comment\n", False),
    ("[core]\n\trepositoryformatversion = 2\n", False),
    ("[core]\n\trepositoryformatversion = 1\n[extensions]\n\tfoo = bar\n", False),
])
def test_the_repository_config_as_git_reads_it(tmp_path, extra, fast):
    """The fast path follows only the config it reads exactly as git does; anything else, git
    reads (and may reject: then no repository, as git says)."""
    repo = make_repo(tmp_path / "proj")
    with open(repo / ".git" / "config", "a") as fh:
        fh.write(extra)
    answers(repo, fast=fast)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a repository away")
def test_a_repository_owned_by_another_user_is_left_to_git(tmp_path):
    """git refuses it (safe.directory); the project root is then the current directory, as before."""
    repo = make_repo(tmp_path / "proj")
    os.chown(repo, 65534, 65534)
    refused = git_top(repo) is None  # unless a safe.directory setting trusts it
    answers(repo, fast=False)
    assert config.find_project_root(repo) == repo.resolve()
    assert validation.git_toplevel(repo) == (None if refused else repo.resolve())


def test_without_git_each_caller_keeps_its_answer(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "proj")
    (repo / "src").mkdir()
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert gitroot.fast_toplevel(repo / "src") is gitroot.ASK_GIT
    assert config.find_project_root(repo / "src") == (repo / "src").resolve(), "outside git: the current directory"
    assert validation.git_toplevel(repo / "src") is None
    with pytest.raises(worktrees.WorktreeError, match="cannot run git"):
        worktrees.toplevel(repo / "src")


def test_a_later_git_init_is_seen(tmp_path):
    """No answer is kept: a long-lived process (the MCP server, the coordinator) sees a new repository."""
    project = tmp_path / "proj"
    project.mkdir()
    if not one_filesystem_up(project) or git_top(project) is not None:
        pytest.skip("tmp_path is inside a repository or crosses a filesystem boundary")
    assert gitroot.fast_toplevel(project) is None and config.find_project_root(project) == project.resolve()
    git("init", "-q", cwd=project)
    assert gitroot.fast_toplevel(project) == project.resolve() == config.find_project_root(project)


def counting_git(tmp_path, monkeypatch):
    """PATH's git is a script that leaves a line in the returned log, then runs the real git."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "git.log"
    (bindir / "git").write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{REAL_GIT}" "$@"\n')
    (bindir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_no_git_is_started_in_a_plain_repository(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "proj")
    klauss = make_repo(tmp_path / "klauss-src")
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(klauss), "klauss", cwd=repo)
    (repo / "src").mkdir()
    log = counting_git(tmp_path, monkeypatch)
    assert gitroot.toplevel(repo / "src") == repo.resolve()
    assert validation.git_toplevel(repo / "src") == repo.resolve()
    assert worktrees.toplevel(repo / "src") == repo.resolve()
    assert config.find_project_root(repo / "src") == repo.resolve()
    # Klauss installed in klauss/, as a submodule: its own top level is looked up too.
    monkeypatch.setattr(config, "KLAUSS_DIR", repo / "klauss")
    assert config.find_project_root(repo) == repo.resolve()
    assert config.find_project_root(repo / "klauss") == repo.resolve(), "the superproject wins"
    calls = log.read_text().splitlines() if log.exists() else []
    assert calls == ["rev-parse --show-superproject-working-tree"], "git only where the top is Klauss's own checkout"
    # The marker works: where only git can tell, git runs.
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    assert gitroot.toplevel(repo / "src") == (repo / "src").resolve()
    assert log.read_text().splitlines()[-1] == "rev-parse --show-toplevel"


def test_a_command_in_a_project_with_klauss_copied_in_starts_no_git(tmp_path, monkeypatch):
    """Klauss copied into the project (not a submodule): its top level is the project's, and the
    superproject question needs no git either, since no repository holds the project's parent."""
    project = make_repo(tmp_path / "proj")
    copy_klauss(project / "klauss")
    plain = one_filesystem_up(project) and git_top(tmp_path) is None
    log = counting_git(tmp_path, monkeypatch)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}, "KLAUSS_AUTO_START": "false"}
    out = subprocess.run([sys.executable, str(project / "klauss" / "submit_task.py"), "submit", "hello"], cwd=project,
                         env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (project / ".klauss" / "claude_tasks.db").exists(), "the project root was found"
    if plain:
        assert not log.exists(), log.read_text()

