"""The engine: the one training loop, its checkpoints, data parallelism, objectives and run identity."""
