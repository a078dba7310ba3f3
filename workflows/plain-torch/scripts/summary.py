"""One JSON over everything the pipeline made: each model's held-out accuracy and the data splits."""

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("inputs", nargs="+")
    args = ap.parse_args()
    summary: dict[str, dict] = {"models": {}, "data": {}}
    for name in args.inputs:
        path = Path(name)
        content = json.loads(path.read_text())
        if path.name == "metrics.json":
            summary["models"][path.parent.name] = content
        else:
            summary["data"][path.stem.removeprefix("data-")] = content
    tmp = f"{args.out}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
