"""The research ledger: one SQLite file (standard library) that every `nanowhale research` command reads and writes.

    led = Ledger.open("research/ledger.sqlite")     # creates the schema; WAL mode, so readers never block
    rows = load_rows("research/ledger.sqlite")      # {"experiments": [dict, ...], "baselines": [...], ...}

Designed to be shared by several agents later: every row carries an `agent` id, writes are short
transactions (BEGIN IMMEDIATE), the file is in WAL mode with a busy timeout, and the state a decision needs
(the best experiment, the noise floor) is derived from rows, not kept in memory.

Tables (columns documented in COLUMNS below; JSON columns hold lists or objects as text):
    settings     key/value: the research tag, branch, scale, budget, metric, k, start commit, fingerprints
    experiments  one row per `research run`: the change, its seeds and results, the verdict and why
    baselines    one row per training run of an unchanged commit: `baseline` repeats and `promote` runs
    promotions   one row per `research promote`: both commits' means at the next rung and the verdict
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

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
        ("status", "TEXT NOT NULL", "done | crash | timeout | diverged | build_failed"),
        ("verdict", "TEXT NOT NULL", "keep | discard | inconclusive | crash"),
        ("reason", "TEXT", "why, in numbers"),
        ("log_tail", "TEXT", "last lines of the training log on a crash"),
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
    ],
}

JSON_COLUMNS = {"seeds", "metric_values", "throughput_values", "best_values", "machine"}


def _create_sql(table: str) -> str:
    cols = ",\n  ".join(f"{name} {sqltype}" for name, sqltype, _ in COLUMNS[table])
    return f"CREATE TABLE IF NOT EXISTS {table} (\n  {cols}\n)"


def _decode(row: sqlite3.Row) -> dict:
    out = dict(row)
    for k in JSON_COLUMNS & out.keys():
        if out[k] is not None:
            out[k] = json.loads(out[k])
    return out


class Ledger:
    """A connection to one ledger file. Each write is one short transaction."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    @staticmethod
    def open(path: str | Path, create: bool = True) -> "Ledger":
        path = Path(path)
        if not create and not path.exists():
            raise ValueError(f"{path}: no research ledger here (run `nanowhale research init TAG` first)")
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)  # autocommit; explicit BEGINs
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        led = Ledger(conn, path)
        with led.transaction():
            for table in COLUMNS:
                conn.execute(_create_sql(table))
                have = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
                for name, sqltype, _ in COLUMNS[table]:  # a ledger made before a column was added gains it
                    if name not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sqltype}")
            conn.execute("CREATE INDEX IF NOT EXISTS experiments_tag ON experiments(tag, id)")
            conn.execute("CREATE INDEX IF NOT EXISTS baselines_tag ON baselines(tag, role, id)")
            conn.execute("INSERT OR IGNORE INTO settings(key, value) VALUES ('schema_version', ?)",
                         (json.dumps(SCHEMA_VERSION),))
        version = led.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{path}: ledger schema version {version}, this nanowhale reads {SCHEMA_VERSION}")
        return led

    def close(self) -> None:
        self.conn.close()

    def transaction(self):
        return _Transaction(self.conn)

    # ---- settings ----
    def get(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    def settings(self) -> dict:
        return {r["key"]: json.loads(r["value"]) for r in self.conn.execute("SELECT key, value FROM settings")}

    def set(self, **values) -> None:
        with self.transaction():
            for k, v in values.items():
                self.conn.execute("INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)", (k, json.dumps(v)))

    # ---- rows ----
    def insert(self, table: str, row: dict) -> int:
        known = {c for c, _, _ in COLUMNS[table]}
        unknown = set(row) - known
        if unknown:
            raise ValueError(f"ledger table {table}: unknown columns {sorted(unknown)}")
        row = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in row.items()}
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.transaction():
            cur = self.conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(row.values()))
        return int(cur.lastrowid)

    def update(self, table: str, row_id: int, **values) -> None:
        values = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in values.items()}
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.transaction():
            self.conn.execute(f"UPDATE {table} SET {sets} WHERE id = ?", (*values.values(), row_id))

    def rows(self, table: str, where: str = "", params: tuple = (), order: str = "id",
             columns: tuple[str, ...] | None = None) -> list[dict]:
        cols = ", ".join(columns) if columns else "*"
        sql = f"SELECT {cols} FROM {table}" + (f" WHERE {where}" if where else "") + f" ORDER BY {order}"
        return [_decode(r) for r in self.conn.execute(sql, params)]

    def row(self, table: str, row_id: int) -> dict | None:
        r = self.conn.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)).fetchone()
        return _decode(r) if r else None


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception): one writer at a time across processes."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
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
