"""Shared code of the GSM8K QLoRA toolkit; the stage scripts in stages/ call into it. Importing it does nothing."""
