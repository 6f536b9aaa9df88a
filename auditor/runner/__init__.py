"""The audit run: set up, stream the batches, assemble the results."""
