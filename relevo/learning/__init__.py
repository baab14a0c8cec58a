"""Bandits, propensity models and off-policy evaluation: numpy, no I/O."""
