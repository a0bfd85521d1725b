"""Several hosts on one database: who is who.

A host is one machine's pool (its own clone, state directory and coordinator) sharing the queue
with others; its id is `Config.host` (KLAUSS_HOST, else [pool] host, else the hostname). A worker's
id names its host (`worker_1@laptop`), so worker rows, claims and every task event say where an
attempt ran, and no host ever mistakes another's worker for one of its own: a pid means nothing on
another machine, so only a host's own workers are judged by their pids; the others' tasks come
back when their leases expire.

A login is the Claude account a host's workers spend: a usage limit pauses every worker on that
login, on whatever host, and no other. Its key is never a secret, only a digest (see `login_key`).
"""

import json
import os
from pathlib import Path

import flags

SEP = "@"  # between a worker's slot name and its host


def worker_id(n, host):
    return f"worker_{n}{SEP}{host}"


def host_of(worker_id):
    """The host a worker id names, or None for a worker started by hand under a bare name."""
    if not worker_id or SEP not in worker_id:
        return None
    return worker_id.rsplit(SEP, 1)[1]


def is_local(worker_row, host):
    """Whether a worker row belongs to `host`: its id says so, or (a worker started by hand under a
    bare name) the host it recorded; a bare row recording nothing is taken as local, as before."""
    named = host_of(worker_row["worker_id"]) or (worker_row.get("info") or {}).get("host")
    return named is None or named == host


def _digest(kind, text):
    return f"{kind}-" + sha256(text.encode()).hexdigest()[:16]


def sha256(data):
    """hashlib's sha256 from the interpreter's built-in module (_sha256; _sha2 since 3.12): the
    same digest, without hashlib loading OpenSSL (~4 ms and 4 MB) in every process that asks."""
    for name in ("_sha2", "_sha256"):
        try:
            return __import__(name).sha256(data)
        except ImportError:
            pass
    import hashlib  # a build without the built-in hashes
    return hashlib.sha256(data)


def login_key(cfg, env=None):
    """Which Claude login this host's workers use, as a name safe to show and store:
      1. KLAUSS_LOGIN or [pool] login, as given: the way to say two hosts share one account;
      2. an API key (ANTHROPIC_API_KEY in [claude] env or the environment): "key-" + its digest;
      3. the OAuth account the CLI is logged in to (oauthAccount in $CLAUDE_CONFIG_DIR/.claude.json,
         else ~/.claude.json): "account-" + a digest of its account id;
      4. otherwise this host's Claude configuration directory: "local-" + a digest of host and path.
    Only digests are kept: the key names a login without revealing anything that grants access."""
    env = os.environ if env is None else env
    if cfg["pool"]["login"]:
        return cfg["pool"]["login"]
    claude_env = {**env, **cfg["claude"]["env"]}
    if claude_env.get("ANTHROPIC_API_KEY"):
        return _digest("key", claude_env["ANTHROPIC_API_KEY"])
    config_dir = claude_env.get("CLAUDE_CONFIG_DIR")
    home = Path(claude_env.get("HOME") or Path.home())
    state = Path(config_dir) / ".claude.json" if config_dir else home / ".claude.json"
    try:
        account = json.loads(state.read_text()).get("oauthAccount") or {}
    except (OSError, ValueError, AttributeError):
        account = {}
    ident = isinstance(account, dict) and (account.get("accountUuid") or account.get("emailAddress"))
    if ident:
        return _digest("account", str(ident))
    return _digest("local", f"{cfg.host}:{config_dir or home / '.claude'}")


def live_flag(queue, names):
    """The first of the flags `names` that is set, as (key, flag), else (None, None)."""
    for key in names:
        flag = queue.get_flag(key)
        if flag:
            return key, flag
    return None, None


def pause_flag(queue, host, login):
    """The pause that holds this host's workers now, or None."""
    return live_flag(queue, [flags.PAUSED, flags.paused_login(login), flags.paused_host(host)])[1]


def config_error_flag(queue, host):
    """The configuration error that stops this host's workers now, or None."""
    return live_flag(queue, [flags.CONFIG_ERROR, flags.config_error(host)])[1]


def coordinators(queue):
    """{host: flag value} of every coordinator the database records (live or not: a pid on another
    host cannot be checked from here; a coordinator renews its flag once a lease, and "seen_at" is
    when it last did)."""
    prefix = flags.coordinator("")
    return {key[len(prefix):]: {**flag["value"], "seen_at": flag["updated_at"]}
            for key, flag in queue.list_flags(prefix).items() if isinstance(flag["value"], dict)}
