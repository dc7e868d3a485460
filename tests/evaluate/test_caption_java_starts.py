"""Caption scoring starts as few JVMs as pycocoevalcap allows, and the one-call tokenization gives
exactly the tokens and scores of pycocoevalcap run the plain way (COCOEvalCap.evaluate: one
PTBTokenizer call for the references, one for the candidates)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from vltune.evaluate import caption
from vltune.evaluate.caption import CAPTION_KEYS, caption_metrics

# Captions the PTB tokenizer treats in non-obvious ways: quotes, contractions, hyphens, ellipses,
# brackets, non-ASCII letters and symbols, numbers with separators, a caption that is only
# punctuation and empty captions on both sides.
PREDS = {
    1: 'a "red" circle\'s left of the blue square...',
    2: "two green triangles (small) & one star; isn't it?",
    3: "",
    4: "Ünïcödé café — naïve résumé, 3.5 cm × 2",
    5: "!!! ,,, ...",
    6: "a dog’s ball, it's “quoted” text",
}
REFS = {
    1: ["A red circle is left of a blue square.", "the circle's red; the square's blue", "''"],
    2: ["Two green triangles, and a star!", "green triangles -- two of them", "a star: yes"],
    3: ["a purple square", ""],
    4: ["a café with a naïve résumé", "3.5cm by 2", "ÜNÏCÖDÉ"],
    5: ["nothing but punctuation", "..."],
    6: ["the dog's ball", "\"quoted\" text, said the dog"],
}


def _plain_tokenization(preds, refs):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tokenizer.tokenize({k: [{"caption": preds[k]}] for k in refs})
    return gts, res


def test_a_caption_evaluation_starts_one_version_check_one_tokenizer_and_one_meteor(monkeypatch, tmp_path):
    """What an evaluate job does: the start-up check (caption_scorer_ready), then two caption
    evaluations. A `java` on PATH that logs each launch counts the JVMs. (The METEOR server it
    starts stays up for the scoring test below, as in a job.)"""
    real = shutil.which("java")
    if real is None:
        pytest.skip("no java on PATH")
    log = tmp_path / "launches.log"
    wrapper = tmp_path / "bin" / "java"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(caption, "_JAVA_OK", set())
    caption.close_meteor()  # a job starts without one
    caption.require_java()
    refs = {1: ["a red circle", "one red circle"], 2: ["a blue square", "the blue square"]}
    caption_metrics({1: "a red circle", 2: "a square"}, refs)
    caption_metrics({1: "a circle", 2: "a blue square"}, refs)
    launches = log.read_text().splitlines()
    assert sum("-version" in line for line in launches) == 1, launches
    assert sum("PTBTokenizer" in line for line in launches) == 2, launches  # one per evaluation
    assert sum("meteor" in line for line in launches) == 1, launches  # one server for the job
    assert len(launches) == 4, launches


def test_one_tokenizer_call_gives_the_tokens_of_two_separate_ptbtokenizer_calls():
    gts, res = caption._tokenize_both(PREDS, REFS)
    plain_gts, plain_res = _plain_tokenization(PREDS, REFS)
    assert gts == plain_gts
    assert res == plain_res
    assert list(gts) == list(REFS) and list(res) == list(REFS)
    assert gts[1][1] == "the circle 's red the square 's blue"  # the tokenizer really ran on these


def test_scores_are_bit_identical_to_pycocoevalcap_scorers_run_the_plain_way():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ours = caption_metrics(PREDS, REFS)
    gts, res = _plain_tokenization(PREDS, REFS)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    # pycocoevalcap's own Meteor.compute_score, on the METEOR process caption_metrics keeps
    # running (METEOR's -stdio mode scores every request on its own).
    meteor, _ = caption._METEOR._meteor.compute_score(gts, res)
    plain = {**{f"bleu{i + 1}": b for i, b in enumerate(bleu)}, "meteor": meteor,
             "rouge_l": Rouge().compute_score(gts, res)[0], "cider": Cider().compute_score(gts, res)[0]}
    assert {k: ours[k] for k in CAPTION_KEYS} == {k: float(plain[k]) for k in CAPTION_KEYS}
    assert 0.0 < ours["cider"] and 0.0 < ours["meteor"] < 1.0


def test_a_java_that_passed_the_check_is_not_checked_again_but_another_one_is(monkeypatch, tmp_path):
    calls = []

    def fake_run(cmd, *a, **k):
        calls.append(cmd[0])
        return subprocess.CompletedProcess(cmd, 0, "", 'openjdk version "17.0.15"')

    monkeypatch.setattr(caption, "_JAVA_OK", set())
    monkeypatch.setattr(caption.subprocess, "run", fake_run)
    monkeypatch.setattr(caption.shutil, "which", lambda name: "/opt/a/java")
    caption._java_checked()
    caption._java_checked()
    assert calls == ["/opt/a/java"]
    monkeypatch.setattr(caption.shutil, "which", lambda name: "/opt/b/java")  # PATH changed
    caption._java_checked()
    assert calls == ["/opt/a/java", "/opt/b/java"]
    caption.require_java()  # the explicit check always runs
    assert calls == ["/opt/a/java", "/opt/b/java", "/opt/b/java"]
    monkeypatch.setattr(caption.shutil, "which", lambda name: None)  # java gone: still an error
    with pytest.raises(RuntimeError, match="not found on PATH"):
        caption._java_checked()
