"""Using a trained run: `nextclick evaluate`, `recommend` and `explain`."""

from __future__ import annotations

import argparse
import json
import shlex

from nextclick import atomic
from nextclick.cli.common import (MAX_K, add_data_options, add_threads_option, checkpoint_and_split, int_in,
                                  output_path)


def cmd_evaluate(args) -> int:
    from nextclick.evaluate import evaluate
    from nextclick.runtime import set_threads

    set_threads(args.threads)
    model, meta, split = checkpoint_and_split(args)
    result = evaluate(model.score, split.test, batch_size=args.batch_size, max_length=model.max_length,
                      progress=not args.quiet, description="test")
    summary = result.summary()
    if args.by_length:
        summary["by_length"] = result.by_length()
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{meta['model']} on {split.name} test ({summary['cases']:,} cases):")
        print("  " + "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()))
        if args.by_length:
            print("\n".join(length_table(summary["by_length"])))
    return 0


def length_table(buckets: dict[str, dict]) -> list[str]:
    """The lines of a per-prefix-length table: one row per length bucket, the cases and each metric."""
    metrics = [k for k in next(iter(buckets.values()), {}) if k != "cases"]
    lines = ["by prefix length:", f"  {'length':>6}  {'cases':>8}  " + "  ".join(f"{m:>7}" for m in metrics)]
    for length, row in buckets.items():
        lines.append(f"  {length:>6}  {row['cases']:>8,}  " + "  ".join(f"{row[m]:>7.4f}" for m in metrics))
    return lines


def session_items(texts: list[str]) -> list[int]:
    """A request's external item ids, checked before any checkpoint is read: integers that fit the id
    table (int64), at most MAX_REQUEST_CLICKS of them."""
    from nextclick.data.batches import MAX_REQUEST_CLICKS

    if len(texts) > MAX_REQUEST_CLICKS:
        raise ValueError(f"a session may give at most {MAX_REQUEST_CLICKS:,} clicks; got {len(texts):,}")
    bad = next((t for t in texts if not _is_item_id(t)), None)
    if bad is not None:
        raise ValueError(f"item ids must be integers below 2**63, got {bad!r}")
    return [int(t) for t in texts]


def _is_item_id(text: str) -> bool:
    try:
        return abs(int(text)) < 2**63
    except ValueError:
        return False


def cmd_recommend(args) -> int:
    import numpy as np

    from nextclick import checkpoint

    if not args.items:
        raise ValueError("an empty session has nothing to recommend from: give at least one item id")
    items = session_items(args.items)
    model, vocab, _ = checkpoint.load(args.checkpoint)
    indices = vocab.encode(items)
    top, scores = model.recommend([np.asarray(indices)], k=args.k)
    ids = vocab.decode(top[0])
    if args.json:
        print(json.dumps([{"item": int(i), "score": float(s)} for i, s in zip(ids, scores[0])]))
    else:
        for rank, (item, score) in enumerate(zip(ids, scores[0]), 1):
            print(f"{rank:3d}  {int(item):>10}  {float(score):.6f}")
    return 0


def cmd_explain(args) -> int:
    from nextclick import checkpoint
    from nextclick.explain import explain, plot

    if args.test:
        return _explain_test_set(args)
    if not args.items:
        raise ValueError("an empty session has nothing to explain: give at least one item id (or --test)")
    items = session_items(args.items)
    model, vocab, _ = checkpoint.load(args.checkpoint)
    explanation = explain(model, vocab, items, k=args.k)
    png, path = output_path(args.out, ".png"), output_path(args.out, ".json")
    plot(explanation, png)
    atomic.write_json(path, explanation.to_dict())
    if explanation.scalars:
        print("   ".join(f"{name} {value:.4f}" for name, value in explanation.scalars.items()))
    print(f"click        {explanation.weights_name}")
    for item, weight in zip(explanation.items, explanation.weights):
        print(f"{item:>10}   {weight:.4f}{'   (exactly zero)' if weight == 0 else ''}")
    print("top recommendations: " + ", ".join(str(r["item"]) for r in explanation.recommendations))
    print(f"wrote {png} and {path}")
    return 0


def _explain_test_set(args) -> int:
    from nextclick.runtime import machine_info
    from nextclick.explain import summarise
    from nextclick.runtime import set_threads

    if args.items:
        raise ValueError("--test reads every test case: give item ids or --test, not both")
    threads = set_threads(args.threads)
    model, meta, split = checkpoint_and_split(args)
    summary = {"checkpoint": str(args.checkpoint), "dataset": split.name, "config": meta.get("config"),
               **summarise(model, split.test, progress=not args.quiet),
               "machine": machine_info(threads), "command": shlex.join(["nextclick", *args.argv])}
    out = output_path(args.out, ".json")
    atomic.write_json(out, summary)
    peak = summary["peak_over_uniform"]
    print(f"{summary['model']} on {split.name} test ({summary['cases']:,} cases): {summary['weights_name']}")
    print(f"  uniform (within 1e-6 of 1/t) in {100 * summary['uniform_share']:.1f}% of sessions of 2+ clicks;"
          f" largest distance from 1/t {summary['largest_distance_from_uniform']:.4f}")
    print(f"  t x largest weight: median {peak['median']}, 90th percentile {peak['p90']}, max {peak['max']}")
    print(f"  clicks with weight exactly 0: {100 * summary['zero_weight_share']:.2f}%;"
          f" mean weight of the last click (2+ clicks) {summary['last_click_mean_weight']:.4f}")
    print(f"wrote {out}")
    return 0



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a test set (full ranking, HR@K and MRR@K)")
    p.add_argument("checkpoint", help="checkpoint directory")
    add_data_options(p)
    p.add_argument("--batch-size", type=int_in(1, 65_536), default=500, help="cases per scoring batch (bounds memory)")
    p.add_argument("--by-length", action="store_true", help="also break metrics down by prefix length")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_threads_option(p)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-K next items for a session: checkpoint + item ids in click order")
    p.add_argument("checkpoint", help="checkpoint directory")
    p.add_argument("items", nargs="*", help="the session's item ids (external ids), oldest first")
    p.add_argument("-k", type=int_in(1, MAX_K), default=20,
                   help=f"how many items to return (20; at most {MAX_K}, and at most the catalogue)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("explain", help="what an attention model weighed in one session (dsan, narm, sr-iem), as PNG heatmap and JSON",
                       description="The weight of each click in the session representation (DSAN: target attention, "
                                   "SR-IEM: importance, NARM: local attention), DSAN's self-attention and alphas, "
                                   "SR-IEM's affinity matrix, and the top recommendations.")
    p.add_argument("checkpoint", help="checkpoint directory of an attention model (dsan, narm with a local or hybrid encoder, sr-iem)")
    p.add_argument("items", nargs="*", help="the session's item ids (external ids), oldest first")
    p.add_argument("--out", default="explanation", help="output path without suffix (writes .png and .json)")
    p.add_argument("-k", type=int_in(1, MAX_K), default=10, help=f"recommendations to list (10; at most {MAX_K})")
    p.add_argument("--test", action="store_true",
                   help="instead of one session, summarise the weights over every test case of the checkpoint's "
                        "dataset (or --dataset): how far from uniform, how much on the last click, how many "
                        "exactly zero; writes <out>.json")
    add_data_options(p)
    add_threads_option(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar (--test)")
    p.set_defaults(func=cmd_explain)
