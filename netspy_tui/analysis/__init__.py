"""Pure functions over events: filtering, aggregation, pattern text. No I/O."""
