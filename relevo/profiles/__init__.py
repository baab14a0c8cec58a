"""Unified profiles: identifiers, identity resolution and merge rules, profile state. Pure."""
