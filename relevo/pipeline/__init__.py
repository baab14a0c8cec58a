"""The processor: the one writer of profile state, fed by the event log."""
