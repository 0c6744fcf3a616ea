"""Results: summary rows, reports, the checkpoint sweep, run comparison, statistics."""
