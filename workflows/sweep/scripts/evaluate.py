"""Score one trained trial on held-out points."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", type=Path, required=True)
ap.add_argument("--out", type=Path, required=True)
args = ap.parse_args()
model = json.loads(args.model.read_text())
score = {"trial": model["trial"], "test_loss": sweep.test_loss(model["w"], model["b"]),
         "train_loss": model["train_loss"], "runs": len(model["runs"])}
args.out.write_text(json.dumps(score, indent=1))
