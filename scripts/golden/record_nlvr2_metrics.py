"""Record the official NLVR2 accuracy and consistency of tests/golden/nlvr2_official_metrics.json.

Usage: python scripts/golden/record_nlvr2_metrics.py NLVR-CHECKOUT [OUT_FILE]

NLVR-CHECKOUT is a checkout of https://github.com/lil-lab/nlvr (recorded at 18924841a). Its
``nlvr2/eval/metrics.py`` is run as its README says (predictions CSV, labelled JSON lines) on 625
examples drawn from a fixed seed: dev and test1 sentences with 1-4 image pairs each, about 70 % of
the predictions right, written in mixed case as the script compares case-insensitively.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

if len(sys.argv) not in (2, 3):
    sys.exit("usage: record_nlvr2_metrics.py NLVR-CHECKOUT [OUT_FILE]")
SCRIPT = Path(sys.argv[1]) / "nlvr2/eval/metrics.py"
OUT = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).resolve().parents[2] / "tests/golden/nlvr2_official_metrics.json"

rng = random.Random(20261203)
examples, preds = [], {}
for split in ("dev", "test1"):
    for set_id in range(60):
        for sentence in range(rng.randint(1, 3)):
            for pair in range(rng.randint(1, 4)):
                ident = f"{split}-{set_id}-{pair}-{sentence}"
                label = rng.choice(["True", "False"])
                examples.append({"identifier": ident, "label": label})
                right = rng.random() < 0.7
                preds[ident] = label if right else ("False" if label == "True" else "True")
with tempfile.TemporaryDirectory() as tmp:
    labels, predictions = Path(tmp) / "labels.jsonl", Path(tmp) / "preds.csv"
    labels.write_text("".join(json.dumps(e) + "\n" for e in examples))
    predictions.write_text("".join(f"{k},{v.lower() if rng.random() < 0.5 else v}\n" for k, v in preds.items()))
    out = subprocess.run([sys.executable, str(SCRIPT), str(predictions), str(labels)],
                         capture_output=True, text=True, check=True).stdout
values = dict(line.split("=") for line in out.split())
golden = {"produced_by": "lil-lab/nlvr nlvr2/eval/metrics.py at commit 18924841a, run on the examples below",
          "accuracy": float(values["accuracy"]), "consistency": float(values["consistency"]),
          "examples": [{"identifier": e["identifier"], "label": e["label"] == "True",
                        "prediction": preds[e["identifier"]] == "True"} for e in examples]}
OUT.write_text(json.dumps(golden, separators=(",", ":")))
print(out.strip(), len(examples))
