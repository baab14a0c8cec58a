"""Suppression of erased people: their identifiers are kept only as hashes."""

from __future__ import annotations

import hashlib

from relevo.profiles.identifiers import Identifier


def suppression_hash(identifier: Identifier) -> str:
    return hashlib.sha256(f"{identifier.type}:{identifier.value}".encode()).hexdigest()
