"""Helpers for testing Relevo and code built on it: a real server in a subprocess."""
