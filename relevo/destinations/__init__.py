"""Destinations: where segment changes and events are delivered (webhooks, ad audiences)."""
