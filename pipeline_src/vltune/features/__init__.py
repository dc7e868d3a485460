"""CLIP feature extraction and the sharded, checksummed feature store."""
