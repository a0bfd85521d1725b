#!/usr/bin/env bash
# Klauss from the shell: a thin dispatcher to the Python programs beside this script.
# Run it from anywhere in your project: the programs find the project's .klauss/ state from the
# current directory, exactly as they do when run directly. `manage.sh help` lists the commands.
set -euo pipefail

# Our own folder, through any chain of symlinks (e.g. a `manage.sh` linked into the project root).
src="${BASH_SOURCE[0]}"
while [ -L "$src" ]; do
    dir="$(cd -P "$(dirname "$src")" && pwd)"
    src="$(readlink "$src")"
    case "$src" in /*) ;; *) src="$dir/$src" ;; esac
done
HERE="$(cd -P "$(dirname "$src")" && pwd)"
PYTHON="${KLAUSS_PYTHON:-python3}"

coordinator() { KLAUSS_VIA=manage.sh exec "$PYTHON" "$HERE/claude_coordinator.py" "$@"; }

usage() {
    cat <<'EOF'
usage: manage.sh COMMAND [ARGS]          (every command takes --db PATH; COMMAND --help for more)
  start [N]                 start a pool of N workers in the background (default: [workers] count)
  stop [--all-hosts]        stop this host's pool gracefully: running tasks are released, then it exits
                            (--all-hosts: every host sharing the database, through the database)
  kill                      kill the pool now (only the processes this project's pool recorded)
  restart [N]               stop, then start N workers (default: as many as before)
  resize N [--force]        grow or shrink the running pool to N workers (--force: past max_workers)
  status | workers          the pool, each worker's pid/CPU/memory/task, and the queue counts
  dashboard                 a live view of the pool and the queue
  run PLAN.json [--yes]     queue a planned job, make sure workers run, wait, print the synthesis
  wait JOB | ID             wait (again) for a job, then print its synthesis (a task: its result)
  install-claude            install the skill, a CLAUDE.md section and the MCP server (.mcp.json)
  mcp [register]            serve Klauss's MCP tools on stdio (or register them in .mcp.json)
  submit PROMPT [OPTIONS]   queue a task
  submit-file FILE          queue the tasks in a JSON file
  list                      list tasks
  show ID                   one task in full
  stats                     queue statistics
  jobs                      jobs with their progress and cost
  cancel ID                 cancel a task
  retry ID                  run a failed or cancelled task again
  purge                     delete old finished tasks
  merge JOB                 bring a worktree job's merged branch into your current branch
  worktrees                 list task worktrees (isolation = "worktree")
  clean-worktrees           remove finished tasks' worktrees, saving uncommitted changes (--branches:
                            also merged branches; --force: unmerged ones too, archived first)
  logs [worker N | task ID] [-f]   the coordinator's log, a worker's log, or a task's history
  ps                        our processes and their claude children
  init-config               write a commented .klauss.toml at the project root (never overwrites)
  clean [--logs] [--yes]    delete the database and logs (asks first)
  doctor                    check Python, tomli, claude and its login, the database, the pool
  help                      this list
EOF
}

cmd="${1:-help}"
[ "$#" -gt 0 ] && shift

case "$cmd" in
    start | stop | kill | restart | resize | status | workers | ps | logs | init-config | clean | doctor)
        coordinator "$cmd" "$@" ;;
    submit | submit-file | list | show | stats | jobs | cancel | retry | purge | merge | worktrees | clean-worktrees)
        KLAUSS_VIA=manage.sh exec "$PYTHON" "$HERE/submit_task.py" "$cmd" "$@" ;;
    dashboard)
        KLAUSS_VIA=manage.sh exec "$PYTHON" "$HERE/claude_dashboard.py" "$@" ;;
    run | wait | install-claude)
        KLAUSS_VIA=manage.sh exec "$PYTHON" "$HERE/orchestrator.py" "$cmd" "$@" ;;
    mcp)
        KLAUSS_VIA=manage.sh exec "$PYTHON" "$HERE/klauss_mcp.py" "$@" ;;
    help | -h | --help)
        usage || true ;;  # a reader that stops early (`| head`) is not an error
    *)
        echo "manage.sh: unknown command '$cmd'" >&2
        usage >&2
        exit 2 ;;
esac
