"""Data: corpora (the embedded synthesis and readers of the real layouts), audio, log-Mel features, frame stores,
batches, k-means targets, the downstream tasks' datasets, crash-safe writes and provenance."""
