"""Generation: the prefix-sharing slot-refilling engine, its KV rows and attention, the resumable runner."""
