"""Label bias of a benchmark file, the paper's Table 9:
``python -m biomegatron_nemo.analysis.label_bias {ner,re,qa} FILE [--json] [--plot FILE.png]``.

Definitions (Shin et al. 2020, §5 / Table 9):

* NER and RE: bias = (sum of the samples of the minority labels) / (samples of the majority
  label). NER counts tags (every token's IOB tag, so ``O`` is usually the majority); RE counts
  rows per label (ChemProt dev: 2,416 positives / 9,404 ``false`` = 0.257).
* QA: bias = (minimum repeat of the same answer) / (maximum repeat), over the first gold answer
  of every question (answer texts compared exactly).

The histogram of labels (or of answer repeats for QA) is printed too; ``--plot`` draws it as a
bar chart with the bias in its title.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Dict

from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.common.plots import bar_chart, check_picture_path, draw_for_command


def label_bias(counts: Counter) -> Dict:
    """NER/RE bias from a label histogram: minority samples / majority samples."""
    if not counts:
        raise ValueError("no labels to measure")
    majority, n_major = counts.most_common(1)[0]
    total = sum(counts.values())
    return {"samples": total, "majority_label": majority, "bias": (total - n_major) / n_major,
            "histogram": dict(counts.most_common())}


def answer_bias(answers: Counter) -> Dict:
    """QA bias from answer-text repeats: minimum repeat / maximum repeat."""
    if not answers:
        raise ValueError("no answers to measure")
    repeats = answers.values()
    return {"samples": sum(repeats), "distinct_answers": len(answers), "bias": min(repeats) / max(repeats),
            "most_repeated": dict(answers.most_common(5)),
            "histogram": dict(sorted(Counter(repeats).items()))}


def ner_label_counts(path, scheme: str = "IOB2") -> Counter:
    from biomegatron_nemo.data.conll import read_conll

    return Counter(t for s in read_conll(path, scheme=scheme) for t in s.tags)


def re_label_counts(path) -> Counter:
    from biomegatron_nemo.data.chemprot import read_classification_tsv

    return Counter(ex.label for ex in read_classification_tsv(path))


def qa_answer_counts(path) -> Counter:
    from biomegatron_nemo.data.squad import read_squad

    return Counter(ex.answers[0]["text"] for ex in read_squad(path) if ex.answers)


def plot_label_bias(result: Dict, path: Path) -> Path:
    """The histogram of :func:`label_bias` / :func:`answer_bias` output as bars (most frequent
    label first; QA: answers per repeat count), the bias in the title."""
    qa = result["task"] == "qa"
    histogram = result["histogram"]
    return bar_chart(path, [str(k) for k in histogram], {"samples": list(histogram.values())},
                     ylabel="answers" if qa else "samples", xlabel="times an answer repeats" if qa else "label",
                     title=f"{os.path.join(*Path(result['file']).parts[-2:])} ({result['task']}): label bias {result['bias']:.3f} (Table 9)",
                     value_format="{:,.0f}")


def main(argv=None, prog=None) -> int:
    p = argparse.ArgumentParser(prog=prog or "python -m biomegatron_nemo.analysis.label_bias",
                                description=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["ner", "re", "qa"])
    p.add_argument("file", help="CoNLL file (ner), [id<TAB>]sentence<TAB>label TSV (re), SQuAD JSON (qa)")
    p.add_argument("--scheme", default="IOB2", choices=["IOB1", "IOB2", "IOBES"], help="NER tag scheme")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the histogram as a bar chart, the bias in its title")
    args = p.parse_args(argv)
    try:
        plot = check_picture_path(args.plot) if args.plot else None
        if args.task == "ner":
            result = label_bias(ner_label_counts(args.file, args.scheme))
        elif args.task == "re":
            result = label_bias(re_label_counts(args.file))
        else:
            result = answer_bias(qa_answer_counts(args.file))
    except (DataFormatError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"task": args.task, "file": args.file, **result}
    print_result(result, args.json)
    if plot is not None:
        return draw_for_command(lambda path: plot_label_bias(result, path), plot)
    return 0


def print_result(result: Dict, as_json: bool = False) -> None:
    """The command's report of a result (with its ``task`` and ``file``): text, or JSON."""
    if as_json:
        print(json.dumps(result, indent=1))
        return
    print(f"file: {result['file']}")
    print(f"samples: {result['samples']:,}")
    print(f"bias: {result['bias']:.3f}")
    if result["task"] == "qa":
        print(f"distinct answers: {result['distinct_answers']:,}")
        print("most repeated answers: " + ", ".join(f"{a!r} ×{n}" for a, n in result["most_repeated"].items()))
        print("histogram (times an answer repeats: number of answers):")
    else:
        print(f"majority label: {result['majority_label']}")
        print("histogram (label: samples):")
    width = max(len(str(k)) for k in result["histogram"])
    for k, v in result["histogram"].items():
        print(f"  {str(k):>{width}}: {v:,}")


if __name__ == "__main__":
    sys.exit(main())
