"""`nanowhale research`: the autoresearch harness (agent_recipes/ says how an agent drives it).

ledger.py holds the SQLite schema every command and notebook reads (load_rows).
"""
