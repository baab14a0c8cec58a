"""Collection: parse, validate, normalise and durably append tracking calls."""
