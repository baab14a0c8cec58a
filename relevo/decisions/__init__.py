"""Decisioning: placements, offers, eligibility, caps, experiments, arbitration, decision log."""
