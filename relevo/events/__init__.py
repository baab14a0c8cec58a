"""The event model (Segment spec), its validation and normalisation. Pure: no I/O."""
