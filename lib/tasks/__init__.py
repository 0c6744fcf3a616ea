"""The tasks' data: GSM8K and AILuminate loading, answer parsing, the few-shot pool, prompts."""
