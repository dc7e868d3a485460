"""Numbers that YAML 1.1 reads as text.

PyYAML (Snakemake's config loader) follows YAML 1.1, whose floats need a dot and, with an
exponent, a signed one: ``1e-4`` and ``1.0e9`` are strings there, ``1.0e-4`` and ``1.0e+9``
floats. JSON schema would refuse such a value as "not of type 'number'"; this check names the key
and the spelling that YAML reads as the number meant, before the schema is applied.
"""

from __future__ import annotations

import re
from pathlib import Path

NUMBER = re.compile(r"(?P<sign>[-+]?)(?P<int>\d[\d_]*)?(?:\.(?P<frac>[\d_]*))?"
                    r"(?:[eE](?P<esign>[-+]?)(?P<exp>\d+))?")


def yaml11_spelling(text: str, integer: bool) -> str | None:
    """How to write the number ``text`` means so that YAML 1.1 reads it as one (None: not a number)."""
    m = NUMBER.fullmatch(text.strip())
    if m is None or not (m["int"] or m["frac"]):
        return None
    value = float(text.replace("_", ""))
    if integer:
        return str(int(value)) if value.is_integer() else None
    if m["exp"] is None:
        return repr(value)
    mantissa = f"{m['sign']}{m['int'] or '0'}.{m['frac'] or '0'}"
    return f"{mantissa}e{m['esign'] or '+'}{m['exp']}"


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def _type_errors(errors):
    for e in errors:
        yield e
        yield from _type_errors(e.context or ())


def numbers_written_as_text(config: dict, schema: dict) -> list[str]:
    """One message per key whose schema type is a number (or integer) and whose value is a string
    spelling a number, in key order."""
    from jsonschema.validators import validator_for

    validator = validator_for(schema)(schema)
    found = {}
    for e in _type_errors(validator.iter_errors(config)):
        if e.validator != "type" or not isinstance(e.instance, str):
            continue
        types = [e.validator_value] if isinstance(e.validator_value, str) else list(e.validator_value)
        if not {"number", "integer"} & set(types):
            continue
        spelling = yaml11_spelling(e.instance, integer="number" not in types)
        if spelling is not None:
            key = _key(e.absolute_path)
            found[key] = (f"config key {key}: {e.instance!r} is text, not a number, to YAML 1.1 (a float needs a "
                          f"dot and a signed exponent); write {spelling}")
    return [found[k] for k in sorted(found)]


def check_numbers_written_as_text(config: dict, schema_path: str | Path) -> None:
    """Raise ValueError naming the first such key (see :func:`numbers_written_as_text`)."""
    import yaml

    problems = numbers_written_as_text(config, yaml.safe_load(Path(schema_path).read_text()))
    if problems:
        raise ValueError(problems[0])
