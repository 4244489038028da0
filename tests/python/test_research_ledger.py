"""The research ledger: schema, JSON columns, settings, transactions, and a second connection reading."""

import sqlite3

import pytest

from nanowhale.research.ledger import COLUMNS, Ledger, load_rows


def test_rows_round_trip_with_json_columns(tmp_path):
    path = tmp_path / "ledger.sqlite"
    led = Ledger.open(path)
    led.set(tag="t1", k=2.0)
    eid = led.insert("experiments", {"agent": "a", "tag": "t1", "started_at": 1.0, "base_commit": "abc",
                                     "description": "lower lr", "scale": "tiny", "budget": "flops:1e12",
                                     "seeds": [0, 1], "metric_name": "val_bpb", "direction": "lower",
                                     "metric_values": [2.0, 2.1], "metric_mean": 2.05, "status": "done",
                                     "verdict": "discard"})
    led.update("experiments", eid, reason="inside the margin")
    other = Ledger.open(path)  # a second process sees the committed row (WAL)
    assert other.row("experiments", eid)["reason"] == "inside the margin"
    rows = load_rows(path)
    assert rows["settings"]["tag"] == "t1" and rows["settings"]["k"] == 2.0
    (exp,) = rows["experiments"]
    assert exp["seeds"] == [0, 1] and exp["metric_values"] == [2.0, 2.1] and exp["id"] == eid
    assert set(exp) == {c for c, _, _ in COLUMNS["experiments"]}
    assert rows["baselines"] == [] and rows["promotions"] == []
    assert led.execute("PRAGMA journal_mode")[0]["journal_mode"] == "wal"


def test_unknown_column_and_missing_ledger_are_errors(tmp_path):
    led = Ledger.open(tmp_path / "l.sqlite")
    with pytest.raises(ValueError, match="unknown columns.*'metric_meen'"):
        led.insert("experiments", {"metric_meen": 1.0})
    with pytest.raises(ValueError, match="no research ledger"):
        load_rows(tmp_path / "absent.sqlite")


def test_a_failed_transaction_leaves_nothing(tmp_path):
    led = Ledger.open(tmp_path / "l.sqlite")
    with pytest.raises(sqlite3.IntegrityError):
        led.insert("baselines", {"agent": "a", "tag": "t"})  # NOT NULL columns missing
    assert led.rows("baselines") == []
