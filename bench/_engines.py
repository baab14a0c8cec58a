"""The distributed engines a benchmark can run on: PostgreSQL schemas and broker URLs.

Every run gets its own PostgreSQL schema (dropped afterwards) and its own stream prefix, on the
servers of this machine (127.0.0.1).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def stream_url(kind: str, tag: str) -> str:
    """A fresh event log of ``kind`` (redis, nats) named after ``tag``."""
    if kind == "redis":
        return f"redis://127.0.0.1:6379/0?prefix={tag}"
    if kind == "nats":
        return f"nats://127.0.0.1:4222?stream={tag.upper()}&prefix={tag}"
    raise ValueError(f"unknown stream kind {kind!r}")


def store_url(schema: str) -> str:
    return f"{POSTGRES}?options=-csearch_path%3D{schema}"


def create_schema(name: str) -> None:
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")


def drop_schema(name: str) -> None:
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@contextmanager
def engines(stream: str, store: str) -> Iterator[dict[str, str]]:
    """``RELEVO_*`` settings for a server on the chosen stream and store (fresh ones)."""
    env: dict[str, str] = {}
    tag = f"b{uuid.uuid4().hex[:10]}"
    if stream != "embedded":
        env["RELEVO_STREAM_URL"] = stream_url(stream, tag)
    if store == "postgresql":
        create_schema(tag)
        env["RELEVO_STORE_URL"] = store_url(tag)
    try:
        yield env
    finally:
        if store == "postgresql":
            drop_schema(tag)
