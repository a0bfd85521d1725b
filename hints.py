"""How Klauss names its own commands to whoever reads its output.

Every command Klauss prints (errors, notes, progress, synthesis, MCP text) must run exactly as
printed from where the reader stands: usually a project root with Klauss in ``klauss/``, where
neither a manage.sh in the current directory nor the programs' own file names exist. Claude Code
acts on these texts, so a wrong path misleads an agent as well as a person. ``manage.sh`` is the one front door (it dispatches
to every program), so every hint is a ``manage.sh`` command, with the path built from where this
checkout of Klauss lies relative to the current directory.
"""

import os
import shlex

KLAUSS_DIR = os.path.dirname(os.path.abspath(__file__))
# manage.sh says it ran this program, so that usage and error lines name the command the user typed;
# taken out of the environment so that the programs this one starts (a pool, its workers, claude) do not inherit it.
VIA_MANAGE = os.environ.pop("KLAUSS_VIA", None) == "manage.sh"


def prog(script, command=None):
    """The program name for usage and error lines: ``manage.sh`` when manage.sh ran ``script``
    (``manage.sh COMMAND`` for a program that is one manage.sh command, such as the dashboard)."""
    if not VIA_MANAGE:
        return script
    return f"manage.sh {command}" if command else "manage.sh"


def manage_path(cwd=None):
    """``klauss/manage.sh`` from a project root, manage.sh with a ``./`` prefix inside Klauss, else an
    absolute path (a relative path out of the current directory breaks as soon as the reader moves)."""
    script = os.path.join(KLAUSS_DIR, "manage.sh")
    here = os.path.abspath(cwd or os.getcwd())
    try:
        rel = os.path.relpath(script, here)
    except ValueError:  # another drive (Windows): only the absolute path works
        return shlex.quote(script)
    if rel.startswith(os.pardir + os.sep) or rel == os.pardir:
        return shlex.quote(script)
    return shlex.quote(rel if os.sep in rel else os.path.join(os.curdir, rel))


def command(*args, cwd=None):
    """The shell command line that runs ``manage.sh ARGS`` from ``cwd`` (default: the current
    directory), each argument quoted for the shell: ``command("wait", 3)`` -> ``klauss/manage.sh wait 3``."""
    return " ".join([manage_path(cwd), *(shlex.quote(str(a)) for a in args)])
