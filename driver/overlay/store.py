"""What this host keeps of the overlay in its own SQLite database: its
overlay networks (the cluster's part is driver/cluster/store.py)."""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS overlay_networks (
    network_id TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    vni        INTEGER NOT NULL,
    device     TEXT NOT NULL
);
"""


def load_networks(conn: sqlite3.Connection) -> list[tuple[str, str, int, str]]:
    return conn.execute("SELECT network_id, name, vni, device FROM overlay_networks").fetchall()


def insert_network(conn: sqlite3.Connection, network_id: str, name: str, vni: int, device: str) -> None:
    conn.execute("INSERT OR REPLACE INTO overlay_networks VALUES (?, ?, ?, ?)", (network_id, name, vni, device))


def delete_network(conn: sqlite3.Connection, network_id: str) -> None:
    conn.execute("DELETE FROM overlay_networks WHERE network_id = ?", (network_id,))
