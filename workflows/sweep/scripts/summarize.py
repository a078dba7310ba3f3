"""The sweep's summary: every trial's held-out loss, the ranking and the best trial (JSON), and a
short Markdown table of the best ten."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--json", type=Path, required=True)
ap.add_argument("--markdown", type=Path, required=True)
ap.add_argument("scores", type=Path, nargs="+")
args = ap.parse_args()
scores = [json.loads(p.read_text()) for p in args.scores]
result = sweep.summary({s["trial"]: s["test_loss"] for s in scores})
result["interrupted_trials"] = sorted(s["trial"] for s in scores if s["runs"] > 1)
args.json.write_text(json.dumps(result, indent=1))
lines = [f"# Sweep of {result['trials']} trials", "",
         f"Best: {result['best']} (held-out loss {result['best_test_loss']:.3g}); "
         f"{len(result['interrupted_trials'])} trial(s) were interrupted and resumed.", "",
         "| rank | trial | lr | nodes x GPUs | held-out loss |", "|---|---|---|---|---|"]
for i, name in enumerate(result["ranking"][:10], 1):
    h = sweep.hyper(name)
    lines.append(f"| {i} | {name} | {h['lr']} | {h['nodes']} x {h['gpus'] // h['nodes']} | "
                 f"{result['test_loss'][name]:.3g} |")
args.markdown.write_text("\n".join(lines) + "\n")
