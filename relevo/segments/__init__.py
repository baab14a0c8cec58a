"""Real-time segments: definitions, the index from inputs to segments, incremental membership."""
