"""A throwaway PostgreSQL server for the tests: initdb into a temporary directory (on /dev/shm where
there is one), listen on a unix socket there and on 127.0.0.1 (a free port), fsync off (nothing in
it outlives the run), stopped with `pg_ctl stop -m immediate` at the end. PostgreSQL refuses to run as root, so as root the server
runs as an unprivileged user (`nobody`). `.ci/run` installs the Debian `postgresql` package where
the binaries are missing; where none can be started, PgUnavailable says why.

    server = PgServer.start()
    url = server.new_database()   # postgresql://klauss@/t1?host=DIR&port=PORT, a fresh empty database
    server.stop()
"""

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "klauss"


class PgUnavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why."""


def find_bin(name):
    found = shutil.which(name)
    if found:
        return found
    # Debian keeps the server binaries out of PATH, one directory per major version.
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _options(addresses, port, base):
    return (f"-c listen_addresses={addresses} -c port={port} -c unix_socket_directories={base} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            "-c shared_buffers=32MB")


class PgServer:
    def __init__(self, base, data, port, user, pg_ctl):
        self.base, self.data, self.port, self.user, self.pg_ctl = base, data, port, user, pg_ctl
        self._names = itertools.count(1)
        self.halted = False

    @classmethod
    def start(cls, listen=(), trust=()):
        """`listen`: more addresses to listen on besides 127.0.0.1; `trust`: networks (CIDR) whose
        clients pg_hba lets in without a password, besides this machine's own."""
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise PgUnavailable("PostgreSQL's initdb/pg_ctl not found (apt-get install postgresql)")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise PgUnavailable("psycopg not installed (pip install -r requirements-postgres.txt)") from None
        user = None
        # In memory where there is a tmpfs: a fresh database is a few MB of files written and removed.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        base = Path(tempfile.mkdtemp(prefix="klauss-pg-", dir=shm))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("nobody")
            except KeyError:
                shutil.rmtree(base, ignore_errors=True)
                raise PgUnavailable("running as root and there is no unprivileged user `nobody` to run "
                                    "PostgreSQL as") from None
            os.chown(base, user.pw_uid, user.pw_gid)
        base.chmod(0o700)
        data = base / "data"
        run_as = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "HOME": str(base)}
        done = subprocess.run([initdb, "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                               "--no-locale", "--no-sync"], cwd=base, env=env, capture_output=True, text=True,
                              timeout=120, **run_as)
        if done.returncode:
            shutil.rmtree(base, ignore_errors=True)
            raise PgUnavailable(f"initdb failed: {done.stderr.strip()[-500:]}")
        if trust:
            with open(data / "pg_hba.conf", "a") as hba:
                hba.writelines(f"host all all {cidr} trust\n" for cidr in trust)
        port, addresses = _free_port(), ",".join(["127.0.0.1", *listen])
        options = _options(addresses, port, base)
        done = subprocess.run([pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-o", options, "-w",
                               "-t", "60", "start"], cwd=base, env=env, capture_output=True, text=True,
                              timeout=120, **run_as)
        server = cls(base, data, port, user, pg_ctl)
        server.addresses = addresses
        if done.returncode:
            log = (base / "server.log").read_text(errors="replace")[-500:] if (base / "server.log").exists() else ""
            server.stop()
            raise PgUnavailable(f"pg_ctl start failed: {done.stderr.strip()[-300:]} {log}")
        return server

    def url(self, database="postgres", tcp=False):
        """Through the unix socket (faster), or with `tcp` through 127.0.0.1."""
        if tcp:
            return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"
        return f"postgresql://{SUPERUSER}@/{database}?host={self.base}&port={self.port}"

    def new_database(self, tcp=False):
        """The URL of a fresh, empty database on this server."""
        import psycopg

        name = f"t{next(self._names)}_{os.getpid()}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name, tcp=tcp)

    def halt(self):
        """Stop the server as a restart or a failover does (`pg_ctl stop -m fast`), keeping its
        files and its address for resume()."""
        self._ctl("-m", "fast", "-w", "stop")
        self.halted = True

    def resume(self):
        """Start again what halt() stopped, at the same address."""
        done = self._ctl("-l", str(self.base / "server.log"), "-o", _options(self.addresses, self.port, self.base),
                         "-w", "-t", "60", "start")
        if done.returncode:
            raise PgUnavailable(f"pg_ctl start failed: {done.stderr.strip()[-300:]}")
        self.halted = False

    def _ctl(self, *args):
        run_as = {} if self.user is None else {"user": self.user.pw_uid, "group": self.user.pw_gid,
                                               "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "HOME": str(self.base)}
        return subprocess.run([self.pg_ctl, "-D", str(self.data), *args], cwd=self.base, env=env,
                              capture_output=True, text=True, timeout=120, **run_as)

    def stop(self):
        """Stop the server we started (by its data directory) and remove its files."""
        if self.data is not None and (self.data / "postmaster.pid").exists():
            run_as = {} if self.user is None else {"user": self.user.pw_uid, "group": self.user.pw_gid,
                                                   "extra_groups": []}
            subprocess.run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"], cwd=self.base,
                           capture_output=True, timeout=60, **run_as)
        self.data = None
        shutil.rmtree(self.base, ignore_errors=True)
