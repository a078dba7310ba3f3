"""A short Markdown report: accuracy and how the training world was laid out."""

import argparse
import json
import re


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--train-log", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.metrics) as f:
        metrics = json.load(f)
    with open(args.train_log, errors="replace") as f:
        joined = sorted(set(re.findall(r"rank_joined rank=(\d+) world_size=(\d+) .*? host=(\S+)", f.read())),
                        key=lambda r: int(r[0]))
    lines = ["# train-eval report", "",
             f"Held-out accuracy: **{metrics['accuracy']:.4f}** on {metrics['n_test']} images", "",
             "| rank | world size | host |", "|---|---|---|"]
    lines += [f"| {rank} | {world} | {host} |" for rank, world, host in joined]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
