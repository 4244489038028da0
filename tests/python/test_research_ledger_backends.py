"""The ledger under concurrent writers, on both backends: SQLite (WAL, busy timeout) and a real PostgreSQL
server the tests start (postgres_server.py). 8 processes start together and write 50 experiment rows each
into a ledger none of them has created yet: 400 rows, none lost, none written twice."""

import multiprocessing
import subprocess
import sys
import time
import uuid

import pytest

from nanowhale.research.ledger import COLUMNS, Ledger, load_rows

WRITERS, ROWS = 8, 50

WRITER = """
import os, sys, time
from nanowhale.research.ledger import Ledger
url, go, agent = sys.argv[1:]
while not os.path.exists(go):  # every writer starts at once
    time.sleep(0.001)
led = Ledger.open(url)
for j in range({rows}):
    led.insert("experiments", {{"agent": agent, "tag": "swarm", "started_at": time.time(), "base_commit": "b",
                               "description": f"{{agent}} idea {{j}}", "scale": "tiny", "budget": "flops:1e12",
                               "seeds": [j], "metric_name": "val_bpb", "direction": "lower",
                               "metric_values": [2.0 - j * 1e-3], "status": "done", "verdict": "discard"}})
led.close()
"""


def write_concurrently(url, tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(rows=ROWS), str(url), str(go), f"w{i}"],
                              stderr=subprocess.PIPE, text=True) for i in range(WRITERS)]
    time.sleep(0.5)  # let them all import and wait on the start file
    go.write_text("go")
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors


def check_every_row_once(url):
    rows = load_rows(url)["experiments"]
    assert len(rows) == WRITERS * ROWS
    assert len({r["id"] for r in rows}) == WRITERS * ROWS
    written = {(r["agent"], r["description"]) for r in rows}
    assert written == {(f"w{i}", f"w{i} idea {j}") for i in range(WRITERS) for j in range(ROWS)}
    for r in rows:  # JSON columns and doubles come back as written, on either backend
        j = int(r["description"].split()[-1])
        assert r["seeds"] == [j] and r["metric_values"] == [2.0 - j * 1e-3]


def open_when_told(path, go):
    go.wait()
    Ledger.open(path).close()


def test_sqlite_ledger_created_by_many_processes_at_once(tmp_path):
    """A swarm's first opens race to put a new file in WAL mode; SQLite answers some of them "database is
    locked" without waiting. Each of 24 trials starts 12 processes (forked: cheap) on a fresh ledger."""
    fork = multiprocessing.get_context("fork")
    for trial in range(24):
        path, go = tmp_path / f"trial{trial}" / "ledger.sqlite", fork.Event()
        procs = [fork.Process(target=open_when_told, args=(path, go)) for _ in range(12)]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * 12, f"trial {trial}: some process could not open the ledger"


def test_sqlite_ledger_under_concurrent_writers(tmp_path):
    path = tmp_path / "research" / "ledger.sqlite"
    write_concurrently(path, tmp_path)
    check_every_row_once(path)
    led = Ledger.open(path)
    assert led.execute("PRAGMA journal_mode")[0]["journal_mode"] == "wal"


@pytest.fixture
def postgres_ledger(postgres_url):
    """A fresh, empty database on the session's server: its URL."""
    import psycopg

    name = f"ledger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + "/" + name


def test_postgres_ledger_under_concurrent_writers(postgres_ledger, tmp_path):
    write_concurrently(postgres_ledger, tmp_path)
    check_every_row_once(postgres_ledger)


def test_postgres_ledger_has_the_same_schema_and_code_path(postgres_ledger):
    led = Ledger.open(postgres_ledger)
    for table, cols in COLUMNS.items():
        assert led.db.table_columns(table) == {c for c, _, _ in cols}
    led.set(tag="t1", k=2.0)
    led.set(k=3.0)  # an upsert
    eid = led.insert("experiments", {"agent": "a", "tag": "t1", "started_at": 1.0, "base_commit": "abc",
                                     "description": "50% lower lr?", "scale": "tiny", "budget": "flops:1e12",
                                     "seeds": [0, 1], "metric_name": "val_bpb", "direction": "lower",
                                     "metric_mean": 2.0123456789012345, "status": "done", "verdict": "discard"})
    led.update("experiments", eid, reason="inside the margin")
    row = led.row("experiments", eid)
    assert row["metric_mean"] == 2.0123456789012345  # a double, not PostgreSQL's 4-byte REAL
    assert row["description"] == "50% lower lr?" and row["reason"] == "inside the margin"
    assert led.settings() == {"schema_version": 1, "tag": "t1", "k": 3.0}
    with pytest.raises(ValueError, match="unknown columns"):
        led.insert("experiments", {"metric_meen": 1.0})


def test_a_postgres_url_without_a_server_is_a_clear_error():
    pytest.importorskip("psycopg")
    with pytest.raises(ValueError, match=r"ledger postgresql://u:\*\*\*@127.0.0.1:1/x: cannot connect"):
        Ledger.open("postgresql://u:secret@127.0.0.1:1/x")
