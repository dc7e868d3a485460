"""Caption metrics through pycocoevalcap: same numbers as calling it directly, clear errors."""

from __future__ import annotations

import subprocess

import pytest

from vltune.evaluate import caption
from vltune.evaluate.caption import (
    CAPTION_KEYS,
    caption_metrics,
    caption_metrics_percent,
    close_meteor,
    require_java,
)

PREDS = {
    "1": "A red circle left of a blue square.",
    "2": "two green triangles",
    "3": "",  # an empty generation must not shift the other captions
    "4": "A YELLOW star, above a star!",
}
REFS = {
    "1": ["A red circle is left of a blue square.", "a red circle and a blue square",
          "There is a circle next to a square."],
    "2": ["Two green triangles.", "a pair of green triangles", "green shapes"],
    "3": ["a purple square", "one purple square"],
    "4": ["A yellow star above another star.", "two stars, one yellow", "stars"],
}


def _direct(preds, refs, meteor):
    """pycocoevalcap used exactly as COCOEvalCap.evaluate does."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tokenizer.tokenize({k: [{"caption": preds[k]}] for k in refs})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    met, _ = meteor.compute_score(gts, res)
    return {
        "bleu1": bleu[0], "bleu2": bleu[1], "bleu3": bleu[2], "bleu4": bleu[3],
        "meteor": met,
        "rouge_l": Rouge().compute_score(gts, res)[0],
        "cider": Cider().compute_score(gts, res)[0],
    }


def test_equals_pycocoevalcap_called_directly():
    ours = caption_metrics(PREDS, REFS)
    assert tuple(ours) == CAPTION_KEYS
    # pycocoevalcap's own Meteor.compute_score, on the Java process caption_metrics keeps
    # running (a second METEOR start-up would cost another ~10 s of test time; METEOR's
    # -stdio mode scores every request on its own, so the process does not change numbers).
    direct = _direct(PREDS, REFS, caption._METEOR._meteor)
    for k in CAPTION_KEYS:
        assert ours[k] == pytest.approx(direct[k], rel=1e-12, abs=1e-12), k
    # a sanity anchor that the inputs are scored at all
    assert 0.0 < ours["cider"] and 0.0 < ours["meteor"] < 1.0


def test_repeated_calls_and_odd_whitespace():
    first = caption_metrics(PREDS, REFS)
    # \r and other line breaks inside a caption would split it into two tokenizer lines and
    # shift every later caption onto the wrong image; they must act as plain spaces.
    odd = dict(PREDS, **{"1": "A red\rcircle left of a\u2028blue square.",
                         "2": "two\x0bgreen triangles"})
    assert caption_metrics(odd, REFS) == first
    pct = caption_metrics_percent(PREDS, REFS)
    assert pct == pytest.approx({k: 100 * v for k, v in first.items()})


def test_perfect_caption_scores_high_and_wrong_caption_low():
    refs = {str(i): [f"a {c} circle", f"one {c} circle", f"the {c} round shape"]
            for i, c in enumerate(["red", "blue", "green", "pink"])}
    good = caption_metrics({k: v[0] for k, v in refs.items()}, refs)
    bad = caption_metrics({k: "zebra on a boat" for k in refs}, refs)
    assert good["bleu1"] == pytest.approx(1.0)
    assert good["cider"] > 1.0 > bad["cider"]
    assert bad["bleu4"] < 1e-6


def test_mismatched_ids_raise_and_name_the_id():
    with pytest.raises(ValueError, match="'9'.*no references"):
        caption_metrics(dict(PREDS, **{"9": "x"}), REFS)
    refs = dict(REFS, **{"7": ["a caption"]})
    with pytest.raises(ValueError, match="'7'.*no prediction"):
        caption_metrics(PREDS, refs)
    with pytest.raises(ValueError, match="'3'.*non-empty"):
        caption_metrics(PREDS, dict(REFS, **{"3": []}))
    with pytest.raises(ValueError, match="empty"):
        caption_metrics({}, {})
    with pytest.raises(TypeError, match="'2'"):
        caption_metrics(dict(PREDS, **{"2": None}), REFS)


def test_missing_java_raises_clear_error(monkeypatch):
    monkeypatch.setattr(caption.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"Java >= 8.*apt-get install default-jre-headless"):
        require_java()
    with pytest.raises(RuntimeError, match="not found on PATH"):
        caption_metrics(PREDS, REFS)


def test_broken_or_old_java_raises(monkeypatch):
    monkeypatch.setattr(caption.shutil, "which", lambda name: "/usr/bin/java")

    def fake_run(returncode, stderr):
        return lambda *a, **k: subprocess.CompletedProcess(a, returncode, "", stderr)

    monkeypatch.setattr(caption.subprocess, "run", fake_run(1, "Error: broken JVM"))
    with pytest.raises(RuntimeError, match="exit code 1.*broken JVM"):
        require_java()
    monkeypatch.setattr(caption.subprocess, "run", fake_run(0, 'java version "1.7.0_80"'))
    with pytest.raises(RuntimeError, match="Java 7"):
        require_java()
    monkeypatch.setattr(caption.subprocess, "run", fake_run(0, 'java version "1.8.0_292"'))
    require_java()
    monkeypatch.setattr(caption.subprocess, "run", fake_run(0, 'openjdk version "21" 2023-09-19'))
    require_java()


def test_close_meteor_stops_the_java_process():
    caption_metrics(PREDS, REFS)
    proc = caption._METEOR._meteor.meteor_p
    assert proc.poll() is None
    close_meteor()
    assert proc.returncode is not None
    assert proc.stdout.closed and proc.stderr.closed and proc.stdin.closed
    assert caption._METEOR._meteor is None


def test_an_evaluation_that_scores_captions_stops_at_start_without_java(tmp_path):
    """Before any checkpoint is loaded or a caption decoded: one line, exit 2, no metrics file."""
    import json
    import os
    import sys

    (tmp_path / "data").mkdir()
    (tmp_path / "data/world.json").write_text("{}")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt/train_log.json").write_text(json.dumps({"wall_s": 1, "final_loss": 1}))
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # python, but no java
    proc = subprocess.run([sys.executable, "-m", "vltune.cli", "evaluate-vlbart", "--checkpoint", str(tmp_path / "ckpt"),
                           "--data", str(tmp_path / "data"), "--features", str(tmp_path / "none"),
                           "--out", str(tmp_path / "metrics.json"), "--params", '{"tasks": ["caption"]}'],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "`java` was not found on PATH" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "metrics.json").exists()
