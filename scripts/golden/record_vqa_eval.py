"""Record the official VQA accuracies of tests/golden/vqa_v2_official_eval.json.

Usage: python scripts/golden/record_vqa_eval.py VQA-CHECKOUT [OUT_FILE]

VQA-CHECKOUT is a checkout of https://github.com/GT-Vision-Lab/VQA (recorded at a013f00); its
``vqaEval.py`` is read from there and run on 1,500 VQA v2-shaped questions drawn from a fixed seed
(ten answer records each, with ``answer_id``; answers and predictions from strings the official
normalisation changes). The per-question accuracy is taken before the script's 2-decimal rounding.
"""
import contextlib
import io
import json
import random
import sys
import types
from pathlib import Path

if len(sys.argv) not in (2, 3):
    sys.exit("usage: record_vqa_eval.py VQA-CHECKOUT [OUT_FILE]")
SOURCE = Path(sys.argv[1]) / "PythonEvaluationTools/vqaEvaluation/vqaEval.py"
OUT = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).resolve().parents[2] / "tests/golden/vqa_v2_official_eval.json"
# The file is Python 2 only through its two progress prints: make them calls, change nothing else.
text = SOURCE.read_text().replace('print "computing accuracy"', 'print("computing accuracy")')
text = text.replace('print "Done computing accuracy"', 'print("Done computing accuracy")')
module = types.ModuleType("vqaEval")
exec(compile(text, str(SOURCE), "exec"), module.__dict__)
VQAEval = module.VQAEval

VOCAB = ["yes", "no", "Yes", "yes.", "2", "two", "Two", "2 ", " 2", "red", "Red", "black, white", "black and white",
         "red/yellow", "red yellow", "leaf-hat", "leaf hat", "yes, just one", "yes just one", "the dog", "a dog",
         "dog.", "dog", "dogs", "3.5", "3,5", "1,000", "1000", "isnt", "isn't", "dont", "don't", "none", "zero", "0",
         "Orange", "orange", "t-shirt", "t shirt", "tshirt", "don't know", "10", "ten", "it's", "its", "itll",
         "new\nline", "tab\there", "new line", "e.g.", "..", "u.s.a.", "usa", "Mr. Smith", "mr smith", "100%",
         "#1", "a", "the", "an apple", "apple", "(left)", "left", "[on] top", "on top", "Im", "I'm", "yall",
         "one", "One", "one.", "a one", "5:00", "5 00", "3 pm", "\"stop\"", "stop", "50 cents", "$50", "?", "!",
         "x-ray", "x ray", "wii", "Wii", "baseball bat", "bat", "." * 40 + "a", "a" + "." * 40]


def case(rng, qid):
    if rng.random() < 0.3:
        answers = [rng.choice(VOCAB)] * 10
    else:
        pool = rng.sample(VOCAB, rng.randint(2, 4))
        answers = [rng.choice(pool) for _ in range(10)]
        if len(set(answers)) == 1:
            answers[0] = pool[1] if answers[0] == pool[0] else pool[0]
    pred = rng.choice(answers) if rng.random() < 0.6 else rng.choice(VOCAB)
    if rng.random() < 0.3:
        pred = rng.choice([pred.upper(), pred.capitalize(), pred + ".", "the " + pred, " " + pred + "\t", pred + "!"])
    return {"question_id": qid, "answers": answers, "prediction": pred}


class Store:
    def __init__(self, qa):
        self.qa = qa

    def getQuesIds(self):
        return list(self.qa)


class Recording(VQAEval):
    raw = {}

    def setEvalQA(self, quesId, acc):  # the unrounded per-question accuracy the overall mean is taken of
        self.raw[quesId] = acc
        super().setEvalQA(quesId, acc)


rng = random.Random(20261203)
cases = [case(rng, 1000 + i) for i in range(1500)]
gts = {c["question_id"]: {"question_id": c["question_id"], "question_type": "what", "answer_type": "other",
                          "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                                      for j, a in enumerate(c["answers"])]} for c in cases}
res = {c["question_id"]: {"question_id": c["question_id"], "answer": c["prediction"]} for c in cases}
ev = Recording(Store(gts), Store(res), n=2)
with contextlib.redirect_stdout(io.StringIO()):
    ev.evaluate()
for c in cases:
    c["official_accuracy"] = ev.raw[c["question_id"]]
out = {"produced_by": "GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py at commit a013f00, "
                      "run under Python 3 (its two print statements made calls); per-question accuracy before "
                      "its 2-decimal rounding",
       "overall_rounded": ev.accuracy["overall"], "cases": cases}
OUT.write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")))
print(ev.accuracy["overall"], sum(c["official_accuracy"] for c in cases) / len(cases),
      sum(len(set(c["answers"])) == 1 for c in cases), len(cases))
