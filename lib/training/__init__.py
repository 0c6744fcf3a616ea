"""Training: the QLoRA trainer, loss and collator, callbacks, SFT data, rejection sampling."""
