"""Caption metrics through the official COCO caption evaluation code (``pycocoevalcap``,
the Python 3 port of tylin/coco-caption).

This is what ``language_evaluation.CocoEvaluator`` (used by VL-T5 / VL-PET) runs: the Stanford
PTB tokenizer (lower-cases and drops punctuation), then BLEU-1..4 (``Bleu(4)``, "closest"
reference length), METEOR 1.5 (``Meteor``), ROUGE-L (``Rouge``, beta 1.2) and CIDEr-D
(``Cider``: clipped tf-idf n-gram similarity with the Gaussian length penalty, sigma 6,
scaled by 10; document frequencies come from the references of the evaluated set).

SPICE is not computed: pycocoevalcap's ``Spice`` downloads the Stanford CoreNLP models on first
use, which the offline default pipeline cannot do.

Java (>= 8) must be installed: the PTB tokenizer and METEOR are Java programs. A missing Java
raises a clear error; metrics are never silently reported as zero.

Numbers are returned as pycocoevalcap reports them (fractions; CIDEr around 1.2 for a good
COCO model); :func:`caption_metrics_percent` multiplies by 100 as the papers print them.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import threading
from typing import Hashable, Mapping, Sequence

__all__ = [
    "CAPTION_KEYS",
    "caption_metrics",
    "caption_metrics_percent",
    "close_meteor",
    "ptb_tokenize",
    "require_java",
]

CAPTION_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")

_JAVA_HELP = (
    "Java >= 8 is needed for caption metrics: pycocoevalcap's PTB tokenizer and METEOR are "
    "Java programs. Install a Java runtime and make sure `java` is on PATH, e.g. "
    "`apt-get install default-jre-headless` (Debian/Ubuntu), `conda install -c conda-forge "
    "openjdk`, or `brew install openjdk` (macOS)."
)


_JAVA_OK: set[str] = set()  # the `java` executables this process has already seen pass the check


def require_java() -> None:
    """Raise RuntimeError unless a working ``java`` (version >= 8) is on PATH.

    Every call runs ``java -version``; the scorers below use :func:`_java_checked`, which runs it
    only for a ``java`` this process has not yet checked."""
    _JAVA_OK.add(_check_java())


def _java_checked() -> None:
    """:func:`require_java`, once per ``java`` executable and process: a job that checked Java at
    its start does not start a JVM again for the check before each tokenizer call."""
    java = shutil.which("java")
    if java is None or java not in _JAVA_OK:
        require_java()


def _check_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(f"`java` was not found on PATH. {_JAVA_HELP}")
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"`{java} -version` could not run ({e}). {_JAVA_HELP}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise RuntimeError(
            f"`{java} -version` failed with exit code {proc.returncode}: {detail}. {_JAVA_HELP}"
        )
    # `java -version` prints e.g. 'openjdk version "17.0.15"' or 'java version "1.8.0_292"'.
    m = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if m:
        major = int(m.group(1))
        if major == 1 and m.group(2) is not None:
            major = int(m.group(2))
        if major < 8:
            raise RuntimeError(f"found Java {major} at {java}. {_JAVA_HELP}")
    return java


def _clean(text: str) -> str:
    # The tokenizer runs with -preserveLines on one caption per line; Java also breaks lines at
    # \r, \x0b, \x0c, \x85, \u2028 ..., which would shift every later caption to the wrong
    # image. Collapsing all whitespace to single spaces keeps exactly one line per caption.
    return " ".join(text.split())


def ptb_tokenize(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """Tokenize ``{key: [caption, ...]}`` with pycocoevalcap's PTBTokenizer in one Java call."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    _java_checked()
    data = {k: [{"caption": _clean(c)} for c in caps] for k, caps in captions.items()}
    try:
        out = PTBTokenizer().tokenize(data)
    except PermissionError as e:
        # PTBTokenizer writes its input to a temporary file beside its jar.
        raise RuntimeError(
            f"pycocoevalcap's PTB tokenizer could not write its temporary file ({e}); its "
            "package folder must be writable (install pycocoevalcap in a user-owned environment)"
        ) from e
    for k, caps in captions.items():
        got = len(out.get(k, []))
        if got != len(caps):
            raise RuntimeError(
                f"PTB tokenizer returned {got} lines for key {k!r}, expected {len(caps)}: "
                "its output is misaligned with the input"
            )
    return out


class _MeteorServer:
    """One pycocoevalcap ``Meteor`` subprocess shared by all calls in this process.

    Starting METEOR loads its paraphrase table (about 10 s on one core), so the process is kept
    and reused; ``Meteor.compute_score`` scores each call's segments on their own, so reuse does
    not change any number. The process is closed by :func:`close_meteor` and at interpreter
    exit, and restarted when it has died. A forked child forgets the parent's process (and
    starts its own when it needs one).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._meteor = None

    def score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        from pycocoevalcap.meteor.meteor import Meteor

        with self._lock:
            if self._meteor is not None and self._meteor.meteor_p.poll() is not None:
                self._close_locked()
            if self._meteor is None:
                self._meteor = Meteor()
            try:
                score, scores = self._meteor.compute_score(gts, res)
            except Exception as e:
                err = self._close_locked()
                raise RuntimeError(
                    f"METEOR failed ({type(e).__name__}: {e}). Java stderr: {err or '(empty)'}"
                ) from e
            return float(score), [float(s) for s in scores]

    def _close_locked(self) -> str:
        """Stop the Java process and close its pipes; return what it wrote to stderr."""
        m, self._meteor = self._meteor, None
        if m is None:
            return ""
        p = m.meteor_p
        # Same steps as Meteor.__del__ (under its lock), plus closing stdout/stderr; the later
        # __del__ is then harmless (closing a closed pipe, killing a reaped process and
        # waiting again are no-ops).
        with m.lock:
            try:
                p.stdin.close()
            except OSError:
                pass
            p.kill()
            p.wait()
        err = ""
        try:
            err = p.stderr.read().decode(errors="replace").strip()[-2000:]
        except (OSError, ValueError):
            pass
        for f in (p.stdout, p.stderr):
            f.close()
        return err

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def forget_after_fork(self) -> None:
        # The child shares the parent's pipes and JVM pid. Marking the inherited Popen as
        # finished makes Meteor.__del__ in the child neither signal nor wait for the
        # parent's JVM; the lock is new because another thread may have held it at fork time.
        self._lock = threading.Lock()
        if self._meteor is not None:
            p = self._meteor.meteor_p
            p.returncode = 0
            self._meteor.lock = threading.Lock()
            for f in (p.stdin, p.stdout, p.stderr):
                f.close()  # the child's copies of the descriptors only
            self._meteor = None


_METEOR = _MeteorServer()
atexit.register(_METEOR.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_METEOR.forget_after_fork)


def close_meteor() -> None:
    """Stop the shared METEOR Java process now (it is restarted on the next call)."""
    _METEOR.close()


def _validate(preds: Mapping, refs: Mapping) -> None:
    if not isinstance(preds, Mapping) or not isinstance(refs, Mapping):
        raise TypeError("caption_metrics: preds and refs must be dicts keyed by image id")
    if len(preds) == 0:
        raise ValueError("caption_metrics: no predictions (empty input)")
    missing_refs = [k for k in preds if k not in refs]
    if missing_refs:
        raise ValueError(
            f"caption_metrics: image id {missing_refs[0]!r} has a prediction but no references "
            f"({len(missing_refs)} such ids)"
        )
    missing_preds = [k for k in refs if k not in preds]
    if missing_preds:
        raise ValueError(
            f"caption_metrics: image id {missing_preds[0]!r} has references but no prediction "
            f"({len(missing_preds)} such ids)"
        )
    for k, pred in preds.items():
        if not isinstance(pred, str):
            raise TypeError(
                f"caption_metrics: prediction for image id {k!r} must be a string, "
                f"got {type(pred).__name__}"
            )
    for k, caps in refs.items():
        if isinstance(caps, str) or len(caps) == 0:
            raise ValueError(
                f"caption_metrics: image id {k!r} needs a non-empty list of reference captions"
            )
        for c in caps:
            if not isinstance(c, str):
                raise TypeError(
                    f"caption_metrics: reference for image id {k!r} is not a string: {c!r}"
                )


def _tokenize_both(
    preds: Mapping[Hashable, str], refs: Mapping[Hashable, Sequence[str]]
) -> tuple[dict, dict]:
    """(references, predictions) tokenized as COCOEvalCap does, in one tokenizer call for both
    sides: tokenization is per line, so this equals tokenizing them separately, minus one Java
    start-up. Keys are the ids of ``refs``, in its order."""
    ids = list(refs)
    tok = ptb_tokenize(
        {**{("ref", k): refs[k] for k in ids}, **{("pred", k): [preds[k]] for k in ids}}
    )
    return {k: tok[("ref", k)] for k in ids}, {k: tok[("pred", k)] for k in ids}


def caption_metrics(
    preds: Mapping[Hashable, str], refs: Mapping[Hashable, Sequence[str]]
) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of one caption per image against its references.

    ``preds``: {image_id: generated caption}; ``refs``: {image_id: [reference, ...]}, same ids.
    Returns {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"} as
    pycocoevalcap reports them (fractions, not percent).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    _validate(preds, refs)
    _java_checked()
    gts, res = _tokenize_both(preds, refs)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor, _ = _METEOR.score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    out = {f"bleu{i + 1}": float(b) for i, b in enumerate(bleu)}
    out.update(meteor=float(meteor), rouge_l=float(rouge), cider=float(cider))
    return out


def caption_metrics_percent(
    preds: Mapping[Hashable, str], refs: Mapping[Hashable, Sequence[str]]
) -> dict[str, float]:
    """:func:`caption_metrics` × 100 (CIDEr 1.2203 -> 122.03), as the papers report them."""
    return {k: 100.0 * v for k, v in caption_metrics(preds, refs).items()}
