"""What this host keeps of the routed mode in its own SQLite database: its
routed networks (the cluster's part is driver/cluster/store.py)."""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS routed_networks (
    network_id TEXT PRIMARY KEY,
    name       TEXT NOT NULL
);
"""


def load_networks(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT network_id, name FROM routed_networks").fetchall()


def insert_network(conn: sqlite3.Connection, network_id: str, name: str) -> None:
    conn.execute("INSERT OR REPLACE INTO routed_networks VALUES (?, ?)", (network_id, name))


def delete_network(conn: sqlite3.Connection, network_id: str) -> None:
    conn.execute("DELETE FROM routed_networks WHERE network_id = ?", (network_id,))
