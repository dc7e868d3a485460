"""The one training loop, its checkpoints, and the task data that feeds it."""
