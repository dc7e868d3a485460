"""Error types shared by all stages (kept import-light so the CLI can catch them cheaply)."""


class UserError(Exception):
    """Bad input (config, params, data, checkpoint): reported as one clear line, not a traceback."""
