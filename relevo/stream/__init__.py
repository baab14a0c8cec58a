"""Event log ports and backends: the partitioned, durable stream between collect and process."""
