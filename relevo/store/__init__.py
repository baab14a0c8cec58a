"""State store ports and backends (profiles, identity graph, offsets, keys)."""
