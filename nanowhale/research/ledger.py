"""The research ledger that every `nanowhale research` command reads and writes: one SQLite file by default
(standard library), or a PostgreSQL database for agents on several machines; same schema, same code
(ledger_db.py adapts the connection).

    led = Ledger.open("research/ledger.sqlite")     # creates the schema; WAL mode, so readers never block
    led = Ledger.open("postgresql://host/research") # the same tables in PostgreSQL
    rows = load_rows("research/ledger.sqlite")      # {"experiments": [dict, ...], "baselines": [...], ...}

Shared by several agents (a swarm, swarm.py): every row carries an `agent` name, writes are short
transactions serialised across processes (and machines), and the state a decision needs (the best
experiment, the noise floor, the open claims) is derived from rows, not kept in memory.

Tables (columns documented in COLUMNS below; JSON columns hold lists or objects as text):
    settings     key/value: the research tag, branch, scale, budget, metric, k, start commit, fingerprints
    experiments  one row per `research run`: the change, its seeds and results, the verdict and why
    baselines    one row per training run of an unchanged commit: `baseline` repeats and `promote` runs
    promotions   one row per `research promote`: both commits' means at the next rung and the verdict
    claims       one row per `research claim`: what an agent is about to try, under a lease
    events       what a swarm's coordination did: run slots taken and given back, syncs, merges
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from nanowhale.research.ledger_db import connect, is_postgres

SCHEMA_VERSION = 1

# (table, column, SQL type, meaning): the single source of the schema and of its documentation.
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "settings": [
        ("key", "TEXT PRIMARY KEY", "setting name (tag, branch, scale, budget, metric, direction, k, ...)"),
        ("value", "TEXT", "JSON-encoded value"),
    ],
    "experiments": [
        ("id", "INTEGER PRIMARY KEY AUTOINCREMENT", "experiment number, increasing"),
        ("agent", "TEXT NOT NULL", "who ran it ($NANOWHALE_AGENT, default 'agent0')"),
        ("tag", "TEXT NOT NULL", "the research tag (branch research/TAG)"),
        ("started_at", "REAL NOT NULL", "unix seconds when `run` started"),
        ("finished_at", "REAL", "unix seconds when the verdict was recorded"),
        ("parent_id", "INTEGER", "the best experiment it was compared to (NULL: the baseline)"),
        ("base_commit", "TEXT NOT NULL", "the best commit the change was made on"),
        ("commit_sha", "TEXT", "the commit made on keep (NULL otherwise)"),
        ("description", "TEXT NOT NULL", "the agent's `-m` text: what and why"),
        ("code_diff", "TEXT", "git diff of everything but the experiment config"),
        ("config_diff", "TEXT", "git diff of the experiment config"),
        ("scale", "TEXT NOT NULL", "ladder rung (preset) it ran at"),
        ("budget", "TEXT NOT NULL", "KIND:AMOUNT, e.g. flops:2e13"),
        ("seeds", "TEXT NOT NULL", "JSON list of the seeds run"),
        ("metric_name", "TEXT NOT NULL", "summary key scored, e.g. val_bpb"),
        ("direction", "TEXT NOT NULL", "'lower' or 'higher' is better"),
        ("metric_values", "TEXT", "JSON list, one per seed"),
        ("metric_mean", "REAL", "mean over seeds"),
        ("throughput_values", "TEXT", "JSON list of training tokens/s, one per seed"),
        ("throughput_mean", "REAL", "mean training tokens/s"),
        ("margin", "REAL", "noise margin the metric had to beat: k*sigma*sqrt(1/r + 1/n)"),
        ("throughput_margin", "REAL", "noise margin of throughput"),
        ("best_metric", "REAL", "the best's mean it was compared to"),
        ("best_throughput", "REAL", "the best's mean throughput"),
        ("best_values", "TEXT", "paired mode: JSON list of the best's median step tokens/s, one per pair "
         "(metric_values holds the candidate's, measured alternately with these)"),
        ("paired_ratio", "REAL", "paired mode: candidate / best tokens/s, exp(mean per-pair log ratio)"),
        ("train_seconds", "REAL", "training seconds, summed over seeds"),
        ("eval_seconds", "REAL", "evaluation seconds, summed over seeds"),
        ("rebuild_seconds", "REAL", "incremental rebuild of the extension (0 when nothing changed)"),
        ("total_seconds", "REAL", "wall seconds of the whole `run`"),
        ("steps", "INTEGER", "optimizer steps of the last seed"),
        ("tokens", "INTEGER", "training tokens of the last seed"),
        ("peak_memory_mb", "REAL", "largest peak RSS of the training subprocesses"),
        ("machine", "TEXT", "JSON: cpu, threads, gpu, peak FLOP/s, build"),
        ("status", "TEXT NOT NULL", "done | crash | timeout | diverged | build_failed | not_run (swarm: the "
         "best moved while it waited for a run slot)"),
        ("verdict", "TEXT NOT NULL", "keep | discard | inconclusive | crash | stale (swarm: it beat the best it "
         "started from, but another agent kept first)"),
        ("reason", "TEXT", "why, in numbers"),
        ("log_tail", "TEXT", "last lines of the training log on a crash"),
        ("active_params", "INTEGER", "the experiment model's active parameters (its size class, size.py)"),
        ("flops_per_token", "REAL", "the experiment model's training FLOPs per token"),
        ("free_size", "INTEGER", "1: run under `init --free-size` (the size class not locked; keeps do not promote)"),
        ("time_verdict", "TEXT", "time control of a would-be keep: faster | inconclusive | slower (paired probe)"),
        ("time_best_values", "TEXT", "time control: JSON list of the best's median step tokens/s, one per pair"),
        ("time_candidate_values", "TEXT", "time control: JSON list of the candidate's, measured alternately"),
        ("time_ratio", "REAL", "time control: candidate / best tokens/s, exp(mean per-pair log ratio)"),
    ],
    "baselines": [
        ("id", "INTEGER PRIMARY KEY AUTOINCREMENT", "row number"),
        ("agent", "TEXT NOT NULL", "who ran it"),
        ("tag", "TEXT NOT NULL", "the research tag"),
        ("created_at", "REAL NOT NULL", "unix seconds"),
        ("role", "TEXT NOT NULL", "baseline | promote_start | promote_best"),
        ("promotion_id", "INTEGER", "the promotions row (promote runs only)"),
        ("commit_sha", "TEXT NOT NULL", "the commit trained"),
        ("scale", "TEXT NOT NULL", "ladder rung"),
        ("budget", "TEXT NOT NULL", "KIND:AMOUNT"),
        ("seed", "INTEGER NOT NULL", "training seed"),
        ("metric_name", "TEXT NOT NULL", "summary key scored"),
        ("metric", "REAL", "the metric (NULL on a crash)"),
        ("heldout_metric", "REAL", "val_bpb on the held-out validation slice (promote runs)"),
        ("throughput", "REAL", "training tokens/s"),
        ("train_seconds", "REAL", "training seconds"),
        ("eval_seconds", "REAL", "evaluation seconds"),
        ("peak_memory_mb", "REAL", "peak RSS of the subprocess"),
        ("status", "TEXT NOT NULL", "done | crash | timeout | diverged"),
        ("log_tail", "TEXT", "last lines of the log on a crash"),
    ],
    "promotions": [
        ("id", "INTEGER PRIMARY KEY AUTOINCREMENT", "row number"),
        ("agent", "TEXT NOT NULL", "who ran it"),
        ("tag", "TEXT NOT NULL", "the research tag"),
        ("created_at", "REAL NOT NULL", "unix seconds"),
        ("from_scale", "TEXT NOT NULL", "the rung the loop ran at"),
        ("to_scale", "TEXT NOT NULL", "the rung promoted to"),
        ("start_commit", "TEXT NOT NULL", "the research branch's starting commit"),
        ("best_commit", "TEXT NOT NULL", "the best commit"),
        ("repeats", "INTEGER NOT NULL", "runs of each commit"),
        ("start_mean", "REAL", "metric mean of the start commit"),
        ("best_mean", "REAL", "metric mean of the best commit"),
        ("margin", "REAL", "noise margin at this rung: k * pooled sigma * sqrt(2/repeats)"),
        ("heldout_start_mean", "REAL", "held-out val_bpb mean of the start commit"),
        ("heldout_best_mean", "REAL", "held-out val_bpb mean of the best commit"),
        ("heldout_margin", "REAL", "noise margin on the held-out slice"),
        ("verdict", "TEXT", "transferred | scale-bound | crash"),
        ("heldout_verdict", "TEXT", "transferred | scale-bound on the held-out slice"),
        ("reason", "TEXT", "the numbers behind the verdict"),
        ("carried", "TEXT", "JSON {start|best: [notes]}: each commit's config change as carried to the target rung"),
    ],
    "claims": [
        ("id", "INTEGER PRIMARY KEY AUTOINCREMENT", "claim number"),
        ("agent", "TEXT NOT NULL", "who claimed it"),
        ("tag", "TEXT NOT NULL", "the research tag"),
        ("created_at", "REAL NOT NULL", "unix seconds"),
        ("description", "TEXT NOT NULL", "the idea, in the agent's words"),
        ("tags", "TEXT", "JSON list of the agent's labels (--tags)"),
        ("files", "TEXT", "JSON list of the files changed in the worktree when claimed"),
        ("config_keys", "TEXT", "JSON list of the experiment-config keys changed when claimed"),
        ("host", "TEXT NOT NULL", "machine of the claiming process"),
        ("pid", "INTEGER NOT NULL", "the agent process holding the lease (the claim's parent process)"),
        ("heartbeat_at", "REAL NOT NULL", "unix seconds of the last sign of life"),
        ("lease_seconds", "REAL NOT NULL", "the claim expires this long after the last heartbeat"),
        ("status", "TEXT NOT NULL", "open | done | released | expired"),
        ("experiment_id", "INTEGER", "the experiment that tried it (status done)"),
        ("duplicate_of", "TEXT", "'claim N' / 'experiment N' it closely matched when made"),
    ],
    "events": [
        ("id", "INTEGER PRIMARY KEY AUTOINCREMENT", "event number: the order events happened in"),
        ("agent", "TEXT NOT NULL", "whose"),
        ("tag", "TEXT NOT NULL", "the research tag"),
        ("at", "REAL NOT NULL", "unix seconds"),
        ("kind", "TEXT NOT NULL", "slot_wait | slot_start | slot_end | sync | merge"),
        ("detail", "TEXT", "JSON: the slot, the commits, what happened"),
    ],
}

JSON_COLUMNS = {"seeds", "metric_values", "throughput_values", "best_values", "machine", "tags", "files",
                "config_keys", "detail", "time_best_values", "time_candidate_values", "carried"}


def _decode(row: dict) -> dict:
    for k in JSON_COLUMNS & row.keys():
        if row[k] is not None:
            row[k] = json.loads(row[k])
    return row


class Ledger:
    """A connection to one ledger (a SQLite file or a PostgreSQL URL). Each write is one short transaction."""

    def __init__(self, db, path: Path | str):
        self.db = db
        self.path = path    # the file (SQLite) or the URL (PostgreSQL) it was opened from
        self.where = db.where

    @staticmethod
    def open(path: str | Path, create: bool = True) -> "Ledger":
        if not is_postgres(path):
            path = Path(path)
            if not create and not path.exists():
                raise ValueError(f"{path}: no research ledger here (run `nanowhale research init TAG` first)")
            path.parent.mkdir(parents=True, exist_ok=True)
        db = connect(path)
        led = Ledger(db, path)
        if not create and is_postgres(path) and not db.table_columns("settings"):
            raise ValueError(f"{db.where}: no research ledger in this database (run `nanowhale research init TAG "
                             f"--ledger {db.where}` first)")
        with led.transaction():
            for table in COLUMNS:
                cols = ",\n  ".join(f"{n} {db.column_type(t)}" for n, t, _ in COLUMNS[table])
                db.execute(f"CREATE TABLE IF NOT EXISTS {table} (\n  {cols}\n)")
                have = db.table_columns(table)
                for name, sqltype, _ in COLUMNS[table]:  # a ledger made before a column was added gains it
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {db.column_type(sqltype)}")
            db.execute("CREATE INDEX IF NOT EXISTS experiments_tag ON experiments(tag, id)")
            db.execute("CREATE INDEX IF NOT EXISTS baselines_tag ON baselines(tag, role, id)")
            db.execute("CREATE INDEX IF NOT EXISTS claims_tag ON claims(tag, status, id)")
            db.execute("INSERT INTO settings(key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO NOTHING",
                       (json.dumps(SCHEMA_VERSION),))
        version = led.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{db.where}: ledger schema version {version}, this nanowhale reads {SCHEMA_VERSION}")
        return led

    def close(self) -> None:
        self.db.close()

    def transaction(self):
        """One write transaction; writers of every process (and machine) take turns."""
        return _Transaction(self.db)

    def execute(self, sql: str, params: tuple = ()) -> list[dict]:
        """Raw SQL in the dialect both backends accept (`?` placeholders); rows as dicts, JSON not decoded."""
        return self.db.execute(sql, params)

    # ---- settings ----
    def get(self, key: str, default=None):
        rows = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def settings(self) -> dict:
        return {r["key"]: json.loads(r["value"]) for r in self.db.execute("SELECT key, value FROM settings")}

    def set(self, **values) -> None:
        with self.transaction():
            for k, v in values.items():
                self.db.execute("INSERT INTO settings(key, value) VALUES (?, ?) "
                                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (k, json.dumps(v)))

    # ---- rows ----
    def insert(self, table: str, row: dict) -> int:
        with self.transaction():
            return self.insert_in_transaction(table, row)

    def insert_in_transaction(self, table: str, row: dict) -> int:
        """insert() inside a transaction the caller holds (a check and the write it decides, atomically)."""
        known = {c for c, _, _ in COLUMNS[table]}
        unknown = set(row) - known
        if unknown:
            raise ValueError(f"ledger table {table}: unknown columns {sorted(unknown)}")
        row = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in row.items()}
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        (out,) = self.db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks}) RETURNING id", tuple(row.values()))
        return int(out["id"])

    def update(self, table: str, row_id: int, **values) -> None:
        values = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in values.items()}
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.transaction():
            self.db.execute(f"UPDATE {table} SET {sets} WHERE id = ?", (*values.values(), row_id))

    def rows(self, table: str, where: str = "", params: tuple = (), order: str = "id",
             columns: tuple[str, ...] | None = None) -> list[dict]:
        cols = ", ".join(columns) if columns else "*"
        sql = f"SELECT {cols} FROM {table}" + (f" WHERE {where}" if where else "") + f" ORDER BY {order}"
        return [_decode(r) for r in self.db.execute(sql, params)]

    def row(self, table: str, row_id: int) -> dict | None:
        rows = self.db.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,))
        return _decode(rows[0]) if rows else None


class _Transaction:
    """BEGIN (the backend's write lock) ... COMMIT, ROLLBACK on an exception: one writer at a time."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.begin_write()
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if exc_type:
            self.db.rollback()
        else:
            self.db.commit()
        return False


def load_rows(path: str | Path) -> dict:
    """Every table of a ledger as lists of dicts (JSON columns decoded), plus its settings. Read-only use:
    {"settings": {...}, "experiments": [...], "baselines": [...], "promotions": [...]}."""
    led = Ledger.open(path, create=False)
    try:
        return {"settings": led.settings(), **{t: led.rows(t) for t in COLUMNS if t != "settings"}}
    finally:
        led.close()


def now() -> float:
    return time.time()


__all__ = ["COLUMNS", "Ledger", "SCHEMA_VERSION", "load_rows"]
