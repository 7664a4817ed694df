"""Choosing which texts to label (`nanonet select`): a cold-start pick from the teacher's
embeddings of an unlabeled pool, and later rounds that add what a trained model is unsure of.

`picking` holds the choices (numpy only); `pool` embeds a pool file with a model, streaming it.
"""

# How the CPU runs the model that embeds; torch-free here so the CLI checks its flag before torch loads.
PRECISIONS = ("int8", "fp32")
