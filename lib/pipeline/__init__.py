"""Run bookkeeping: the typed config, run identity, the artifact map, what each stage reads, the stage CLI."""
