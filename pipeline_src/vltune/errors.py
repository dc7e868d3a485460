"""Error types shared by all stages (kept import-light so the CLI can catch them cheaply)."""


class UserError(Exception):
    """Bad input (config, params, data, checkpoint): reported as one clear line, not a traceback."""


class ArtifactError(UserError, ValueError):
    """A missing, truncated, corrupted or mismatched file one stage wrote and another reads (a table,
    a safetensors file): one line naming the file. Also a ValueError, the type readers raised for
    unreadable files, so callers that catch that keep working."""
