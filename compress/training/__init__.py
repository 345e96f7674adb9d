"""Training: the one loop, batches, losses, transfer sets, recovery, curriculum, importance scores."""
