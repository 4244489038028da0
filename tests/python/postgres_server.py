"""A real PostgreSQL server for the ledger tests, started from Debian's `postgresql` package binaries
(/usr/lib/postgresql/*/bin) into a temporary directory on a free local port, trust authentication, and
stopped at the end. initdb refuses to run as root, so as root the server runs as the `postgres` user the
package creates (else `nobody`), through `runuser`."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

REQUIRE_ENV = "NANOWHALE_REQUIRE_POSTGRES"


def server_bin() -> Path | None:
    """The newest installed server's bin directory (initdb, pg_ctl), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user() -> list[str]:
    """The command prefix that drops root (initdb and postgres refuse to run as root)."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    raise RuntimeError("running as root with neither a `postgres` nor a `nobody` user to run PostgreSQL as")


@contextmanager
def postgres_server():
    """Yields a postgresql:// URL of a fresh server (database `postgres`, superuser `nanowhale`)."""
    bindir = server_bin()
    assert bindir is not None
    prefix = _as_user()
    # directly under /tmp when dropping root: the unprivileged user must reach it ($TMPDIR may be root's own)
    root = Path(tempfile.mkdtemp(prefix="nanowhale-pg-", dir="/tmp" if prefix else None))
    data = root / "data"
    if prefix:
        user = prefix[2]
        shutil.chown(root, user)
        root.chmod(0o700)
    port = _free_port()
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "nanowhale", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start",
            "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off")
        try:
            yield f"postgresql://nanowhale@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    except subprocess.CalledProcessError as e:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        raise RuntimeError(f"{e.cmd} failed: {e.stderr}{e.stdout}\n{log}") from e
    finally:
        shutil.rmtree(root, ignore_errors=True)
