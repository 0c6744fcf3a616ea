"""The safety judge: guard formats, the judge's inputs, verdicts, running the safeguard model."""
