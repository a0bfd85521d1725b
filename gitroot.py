"""The git top level of a directory: the one place config (the project root), validation
(`metadata.repo`) and worktrees ask it, answered without starting git in the usual layouts.

Every Klauss process asks which repository it is in, and `git rev-parse --show-toplevel` costs a
fork and exec of git each time. `fast_toplevel` walks up from the directory as git's own discovery
does and answers only where git's answer is certain: a `.git` directory, or a `.git` file saying
`gitdir: <path>` (a submodule, a linked worktree), whose git directory has a valid HEAD, objects
and refs and a plain config. Everything else is left to git, the authority: it returns ASK_GIT and
the caller runs git exactly as before. That covers
- environment variables that steer discovery (GIT_DIR, GIT_WORK_TREE, GIT_CEILING_DIRECTORIES, ...);
- git missing from PATH (each caller keeps its own answer there: no repository, or WorktreeError);
- a `.git` of another shape, or a git directory git would not accept;
- a repository config setting `core.bare`, `extensions` or a `core.worktree` other than the
  directory itself (a submodule's names its own directory), or syntax this reader does not follow;
- a directory that is itself a git directory on the way up (a bare repository, inside `.git`);
- a repository owned by another user: git's `safe.directory` check may refuse it (then the project
  root is the current directory, as it always was);
- a filesystem boundary crossed on the way up (git stops there).
Two differences remain, both where git itself is broken: a `git` on PATH is taken to run, and the
user's and the system's git config files are not read (a syntax error there makes every git
command fail, so git found no repository while this finds it; the worktree commands then report
git's error).
No answer is cached: a long-lived process (the MCP server, the coordinator) sees a later `git init`,
and a walk costs a few stat calls (well under a millisecond; git's fork and exec cost several).
"""

import os
import stat
import subprocess
from pathlib import Path


class _AskGit:
    def __repr__(self):
        return "ASK_GIT"


ASK_GIT = _AskGit()  # only git can tell

# Set in the environment, these change where (or whether) git finds a repository, or whom it trusts.
_STEERING = ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY", "GIT_CEILING_DIRECTORIES",
             "GIT_DISCOVERY_ACROSS_FILESYSTEM", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
             "GIT_TEST_ASSUME_DIFFERENT_OWNER")
# Plain string tests rather than regular expressions: every process imports this module.
_HEX = frozenset(b"0123456789abcdefABCDEF")
_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_SMALL = 65536  # a HEAD, a `.git` file or a repository config longer than this is left to git


def toplevel(path, timeout=60):
    """The git top level of directory `path` (resolved), or None outside git, without git, or
    where git fails or times out."""
    top = fast_toplevel(path)
    if top is not ASK_GIT:
        return top
    try:
        cp = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=str(path), capture_output=True, text=True,
                            timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = cp.stdout.strip()
    return Path(out).resolve() if cp.returncode == 0 and out else None


def fast_toplevel(path):
    """What `git rev-parse --show-toplevel` run in directory `path` answers (resolved; None where
    it fails because no repository is found), without running it; ASK_GIT where only git can tell."""
    if any(name in os.environ for name in _STEERING) or not _git_on_path():
        return ASK_GIT
    try:
        here = os.path.realpath(path)
        st = os.stat(here)
    except (OSError, ValueError):
        return ASK_GIT
    if not stat.S_ISDIR(st.st_mode) or ".git" in here.split(os.sep):
        return ASK_GIT
    device = st.st_dev
    while True:
        found = _top_at(here)
        if found is not None:
            return found
        parent = os.path.dirname(here)
        if parent == here:
            return None
        try:
            if os.stat(parent).st_dev != device:
                return ASK_GIT
        except OSError:
            return ASK_GIT
        here = parent


def _git_on_path():
    """Whether the `git` a subprocess would start exists (os.get_exec_path: subprocess's own PATH)."""
    for folder in os.get_exec_path():
        if not os.path.isabs(folder):  # relative to the child's working directory: let it try
            return False
        candidate = os.path.join(folder, "git")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return True
    return False


def _top_at(here):
    """`here` when its `.git` makes it the top level, None when git looks further up, ASK_GIT
    otherwise."""
    dotgit = os.path.join(here, ".git")
    try:
        st = os.lstat(dotgit)
    except FileNotFoundError:
        # A directory that is itself a git directory (a bare repository, `.git` itself) stops git.
        return ASK_GIT if os.path.lexists(os.path.join(here, "HEAD")) else None
    except OSError:
        return ASK_GIT
    if stat.S_ISDIR(st.st_mode):
        gitdir = dotgit
    elif stat.S_ISREG(st.st_mode):
        gitdir = _gitfile_target(dotgit, here)
        if gitdir is None:
            return ASK_GIT
    else:
        return ASK_GIT
    gitdir = os.path.realpath(gitdir)
    common = _common_dir(gitdir)
    if common is None:
        return ASK_GIT
    uid = os.geteuid()
    try:
        if any(os.lstat(p).st_uid != uid for p in (here, dotgit, gitdir)):
            return ASK_GIT  # git's safe.directory check decides
    except OSError:
        return ASK_GIT
    if not _plain_config(os.path.join(common, "config"), here, gitdir, linked=common != gitdir):
        return ASK_GIT
    return Path(here)


def _read_small(path):
    try:
        with open(path, "rb") as fh:
            data = fh.read(_SMALL + 1)
    except OSError:
        return None
    return data if len(data) <= _SMALL else None


def _gitfile_target(dotgit, here):
    """The git directory a `.git` file names (`gitdir: <path>`, relative to its folder), or None."""
    data = _read_small(dotgit)
    if data is None or not data.startswith(b"gitdir: "):
        return None
    target = data[8:].rstrip(b"\r\n")
    if not target or b"\0" in target:
        return None
    return os.path.join(here, os.fsdecode(target))


def _common_dir(gitdir):
    """The repository's common directory when `gitdir` is a git directory git accepts (a valid HEAD;
    objects and refs, in the common directory a linked worktree's `commondir` names), else None."""
    try:
        if not stat.S_ISREG(os.lstat(os.path.join(gitdir, "HEAD")).st_mode):
            return None
    except OSError:
        return None
    # A HEAD git accepts (validate_headref): a symbolic ref under refs/, or a commit id.
    head = _read_small(os.path.join(gitdir, "HEAD")) or b""
    if not (head[4:].lstrip(b" \t\n\v\f\r").startswith(b"refs/") if head.startswith(b"ref:")
            else len(head) >= 40 and _HEX.issuperset(head[:40])):
        return None
    common = gitdir
    pointer = os.path.join(gitdir, "commondir")
    if os.path.lexists(pointer):
        data = _read_small(pointer)
        target = data.rstrip(b"\r\n") if data is not None else b""
        if not target or b"\0" in target:
            return None
        common = os.path.realpath(os.path.join(gitdir, os.fsdecode(target)))
    for sub in ("objects", "refs"):
        if not (os.path.isdir(os.path.join(common, sub)) and os.access(os.path.join(common, sub), os.X_OK)):
            return None
    return common


def _plain_config(path, here, gitdir, linked):
    """Whether the repository config leaves the top level at `here`: not bare, no extensions, a
    supported format, and no `core.worktree` but one naming `here` itself (a submodule's, relative
    to its git directory). False for whatever this reader does not follow (quotes or escapes in a
    value, a key on a section's line, anything git might reject as a bad config line), which git
    then reads. `linked`: a linked worktree's (shared) config."""
    data = _read_small(path)
    if data is None:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    section, core = None, {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if line[-1] != "]":
                return False
            # [name] or [name "subsection"], spelled as git's parser wants them (no escapes).
            name, quote, sub = line[1:-1].partition('"')
            if quote:
                if name == name.rstrip() or sub[-1:] != '"' or '"' in sub[:-1] or "\\" in sub:
                    return False
                name = name.rstrip()
            if not name or not _NAME.issuperset(name.replace(".", "")):
                return False
            section = name.lower() + (".sub" if quote else "")
            continue
        key, equals, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if (section is None or not key or not key[0].isalpha() or not key.isascii() or not _NAME.issuperset(key)
                or '"' in value or "\\" in value):
            return False
        if section == "extensions":
            return False
        if section == "core":
            if "#" in value or ";" in value:
                return False
            core[key.lower()] = value if equals else None  # a key without "=" is true; the last one wins
    if core.get("repositoryformatversion", "0") not in ("0", "1"):
        return False
    bare = core.get("bare", "false")
    if bare is None or bare.lower() not in ("false", "no", "off", "0"):
        return False
    worktree = core.get("worktree")
    if worktree is not None:
        if linked or not worktree:
            return False
        return os.path.realpath(os.path.join(gitdir, worktree)) == here
    return True
