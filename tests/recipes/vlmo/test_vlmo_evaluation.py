"""The merging study's NLVR2 evaluation reports the official consistency (every statement of a
sentence right) beside accuracy, grouped by the examples' NLVR2 identifiers (``pair_id``)."""

from __future__ import annotations

import torch

from vltune.recipes.vlmo import tasks as vlmo_tasks
from vltune.recipes.vlmo.data import TaskData


class _Predicts:
    """Stands in for a task model: answers ``preds[i]`` for example i."""

    backbone = None

    def __init__(self, preds):
        self.preds = preds

    def eval(self):
        return self

    def __call__(self, b):
        return torch.nn.functional.one_hot(torch.tensor([int(self.preds[i]) for i in b["idx"]]), 2).float()


def test_nlvr2_evaluation_reports_consistency_by_sentence(monkeypatch):
    monkeypatch.setattr(vlmo_tasks, "make_batch", lambda data, idx, bank, pad_id: {"idx": list(idx)})
    # sentence dev-1--0: pairs 0,1,2 all right; dev-1--1: one wrong; dev-2--0: right -> 2 of 3 sentences
    ids = ["dev-1-0-0", "dev-1-1-0", "dev-1-2-0", "dev-1-0-1", "dev-1-1-1", "dev-2-0-0"]
    labels = [True, False, True, True, True, False]
    preds = [True, False, True, True, False, False]
    data = TaskData("nlvr2", texts=None, images=[], refs=labels, ids=ids)
    monkeypatch.setattr(TaskData, "__len__", lambda self: len(self.refs))
    out = vlmo_tasks.evaluate_task(_Predicts(preds), data, bank=None, pad_id=0, batch_size=4)
    assert out == {"nlvr2_accuracy": 100 * 5 / 6, "nlvr2_consistency": 100 * 2 / 3}
    # identifiers of another dataset (the shapes world's): accuracy only
    data.ids = [f"shapes_val_pair_{i:06d}" for i in range(6)]
    assert vlmo_tasks.evaluate_task(_Predicts(preds), data, None, 0, 4) == {"nlvr2_accuracy": 100 * 5 / 6}
