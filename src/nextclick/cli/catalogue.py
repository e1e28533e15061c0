"""`nextclick datasets` and `nextclick models`: what there is to train on, and what to train."""

from __future__ import annotations

import argparse
import json


def cmd_datasets(args) -> int:
    from nextclick.data.benchmarks import available, data_dir, load_split

    root = data_dir(args.data_dir)
    print(f"data directory: {root if root else '(none: set $NEXTCLICK_DATA or --data-dir)'}")
    rows = [("synthetic", None)] + list(available(args.data_dir).items())
    print(f"{'name':<16}{'protocol':<10}{'train sessions':>15}{'train cases':>13}{'test cases':>12}{'items':>9}")
    from nextclick.data.benchmarks import resolve

    for name, path in rows:
        split = resolve(name) if path is None else load_split(path, name)
        s = split.stats()
        print(f"{name:<16}{s['protocol']['name']:<10}{s['train_sessions']:>15,}{s['train_cases']:>13,}"
              f"{s['test_cases']:>12,}{s['items']:>9,}")
    return 0


def cmd_models(args) -> int:
    from dataclasses import asdict

    from nextclick.models import REGISTRY, model_class

    if args.config:
        cls = model_class(args.config)
        print(json.dumps(asdict(cls.Config()), indent=1))
        return 0
    if args.presets:
        print(json.dumps(model_class(args.presets).presets, indent=1))
        return 0
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        print(f"{name:<12}{'neural' if cls.neural else 'statistical':<13}{cls.citation}")
    return 0



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list available splits with their counts")
    p.add_argument("--data-dir", default=None, help="data directory (default: $NEXTCLICK_DATA, else ../shared/data)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", help="list registered models, or print one model's default config")
    p.add_argument("--config", metavar="MODEL", help="print this model's config with its defaults")
    p.add_argument("--presets", metavar="MODEL", help="print this model's named presets (`--preset NAME` of train, "
                                                      "bench and speed): the config values each sets")
    p.set_defaults(func=cmd_models)
