"""Destinations' outbound building blocks: SSRF checks, a pinned HTTP client, webhook signing,
retry policy and ad-audience hashing.

Each module is small and usable alone; the destination dispatcher composes them:

- ``ssrf``: ``check_url`` at save time, ``resolve_and_check`` at send time.
- ``http``: ``OutboundClient``, which connects only to checked addresses and never follows
  redirects.
- ``signing``: Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``).
- ``retry``: outcome classification and backoff with full jitter within a retry budget.
- ``audiences``: normalised, SHA-256-hashed identifiers for Google Customer Match and Meta
  Custom Audiences.
"""

from __future__ import annotations
