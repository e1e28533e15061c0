"""Using a trained run: `nextclick evaluate`, `recommend` and `explain`. Each reads the run and answers
through the Python API (nextclick.api: load, evaluate_run, recommend, explain_session), so the command line and
code give the same answers; this module parses and prints."""

from __future__ import annotations

import argparse
import json
import shlex

from nextclick import atomic
from nextclick.cli.common import MAX_K, add_data_options, add_threads_option, int_in, output_path


def cmd_evaluate(args) -> int:
    from nextclick import api
    from nextclick.runtime import set_threads

    set_threads(args.threads)
    run = api.load(args.checkpoint)
    split = api.split_for(run, args.dataset, args.data_dir)
    result = api.evaluate_run(run, split, batch_size=args.batch_size, progress=not args.quiet)
    summary = result.summary()
    summary["calibrated"] = getattr(run.model, "calibration", None) is not None
    if args.by_length:
        summary["by_length"] = result.by_length()
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        calibrated = ", with its repeat calibration (calibration.json)" if summary["calibrated"] else ""
        print(f"{run.model.name} on {split.name} test ({summary['cases']:,} cases{calibrated}):")
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
    """A request's raw item ids from the command line, checked (nextclick.api.checked_session) before
    any checkpoint is read. A word that is no integer is passed on as it is, so the message names it."""
    from nextclick.api import checked_session

    return checked_session([_integer_or_text(text) for text in texts])


def _integer_or_text(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def cmd_recommend(args) -> int:
    from nextclick import api

    items = session_items(args.items)
    ids, scores = api.recommend(api.load(args.checkpoint), items, k=args.k, exclude_seen=args.exclude_seen)
    if args.json:
        print(json.dumps([{"item": int(i), "score": float(s)} for i, s in zip(ids, scores)]))
    else:
        for rank, (item, score) in enumerate(zip(ids, scores), 1):
            print(f"{rank:3d}  {int(item):>10}  {float(score):.6f}")
    return 0


def cmd_explain(args) -> int:
    from nextclick import api
    from nextclick.explain import plot

    if args.test:
        return _explain_test_set(args)
    if not args.items:
        raise ValueError("an empty session has nothing to explain: give at least one item id (or --test)")
    items = session_items(args.items)
    explanation = api.explain_session(api.load(args.checkpoint), items, k=args.k)
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
    from nextclick import api
    from nextclick.explain import summarise
    from nextclick.runtime import machine_info, set_threads

    if args.items:
        raise ValueError("--test reads every test case: give item ids or --test, not both")
    threads = set_threads(args.threads)
    run = api.load(args.checkpoint)
    split = api.split_for(run, args.dataset, args.data_dir)
    summary = {"checkpoint": str(args.checkpoint), "dataset": split.name, "config": run.record.get("config"),
               **summarise(run.model, split.test, progress=not args.quiet),
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
    p.add_argument("--exclude-seen", action="store_true",
                   help="leave out the session's own items (still k of them); by default they may be recommended")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("explain", help="what an attention model weighed in one session (every neural model but gru4rec), as PNG heatmap and JSON",
                       description="The weight of each click in the session representation (DSAN: target attention, "
                                   "SR-IEM: importance, NARM and CSRM: local attention (CSRM also its memory gate), STAMP, "
                                   "SR-GNN, GC-SAN and DANSeR: their readout attention, BERT4Rec: the appended mask's "
                                   "attention, CoSAN: the last click's self-attention), DSAN's self-attention and alphas, "
                                   "SR-IEM's affinity matrix, the "
                                   "repeat probability of a model with the repeat decoder, and the top recommendations.")
    p.add_argument("checkpoint", help="checkpoint directory of an attention model (dsan, narm with a local or hybrid encoder, sr-iem, "
                                          "stamp, sr-gnn, gc-san, danser, bert4rec, cosan, csrm)")
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
