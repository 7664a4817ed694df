"""Data: reading tables, the label-scarce protocol, tokenization and token-budget batches."""
