"""Benchmarks behind ``relevo bench``."""
