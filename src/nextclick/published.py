"""Published numbers on exactly the benchmark splits nextclick ships loaders for, to compare with.

Fractions, not percent. Sources: DSAN (Yuan et al., AAAI 2021) Table 2 for retailrocket (HR@10,
HR@20, MRR@10, MRR@20); SR-IEM (Pan et al., SIGIR 2020) Table 2 and NARM (Li et al., CIKM 2017)
Table 3 for diginetica and yoochoose1_64 (HR@20 = their P@20 / Recall@20, MRR@20), as collected in
the project's protocols.md. Where SR-IEM and SR-GNN disagree (FPMC on diginetica) the sorted-split
number (SR-GNN's) is kept; SR-IEM's 31.55 / 8.92 is NARM's unsorted-data row.
"""

from __future__ import annotations

DSAN_TABLE_2 = "DSAN (AAAI 2021) Table 2"
SRIEM_TABLE_2 = "SR-IEM (SIGIR 2020) Table 2"
NARM_TABLE_3 = "NARM (CIKM 2017) Table 3"
SRGNN_TABLE_2 = "SR-GNN (AAAI 2019) Table 2"
DSAN_TABLE_3 = "DSAN (AAAI 2021) Table 3"
NARM_TABLE_2 = "NARM (CIKM 2017) Table 2"
NARM_TABLE_4 = "NARM (CIKM 2017) Table 4"


def _row(source: str, hr20: float, mrr20: float, hr10: float | None = None, mrr10: float | None = None) -> dict:
    row = {"HR@20": hr20, "MRR@20": mrr20, "source": source}
    if hr10 is not None:
        row.update({"HR@10": hr10, "MRR@10": mrr10})
    return row


PUBLISHED: dict[str, dict[str, dict]] = {
    "retailrocket": {
        "s-pop": _row(DSAN_TABLE_2, .3803, .2481, .3578, .2468),
        "fpmc": _row(DSAN_TABLE_2, .3237, .1382, .2599, .1338),
        "sknn": _row(DSAN_TABLE_2, .5428, .2646, .4674, .2593),
        "stan": _row(DSAN_TABLE_2, .5348, .2681, .4656, .2633),
        "gru4rec": _row(DSAN_TABLE_2, .4401, .2367, .3835, .2327),
        "stamp": _row(DSAN_TABLE_2, .5096, .2517, .4295, .2461),
        "sr-gnn": _row(DSAN_TABLE_2, .5032, .2657, .4321, .2607),
        "gc-san": _row(DSAN_TABLE_2, .5118, .2740, .4410, .2692),
        "bert4rec": _row(DSAN_TABLE_2, .5419, .2642, .4585, .2584),
        "cosan": _row(DSAN_TABLE_2, .5247, .2440, .4381, .2380),
        "dsan": _row(DSAN_TABLE_2, .5654, .3074, .4905, .3021),
    },
    "diginetica": {
        "pop": _row(SRGNN_TABLE_2, .0089, .0020),
        "s-pop": _row(SRIEM_TABLE_2, .2106, .1368),
        "item-knn": _row(SRIEM_TABLE_2, .3575, .1157),
        "bpr-mf": _row(SRGNN_TABLE_2, .0524, .0198),
        "fpmc": _row(SRGNN_TABLE_2, .2653, .0695),
        "gru4rec": _row(SRIEM_TABLE_2, .2945, .0833),
        "narm": _row(SRIEM_TABLE_2, .4970, .1617),
        "stamp": _row(SRIEM_TABLE_2, .4564, .1432),
        "csrm": _row(SRIEM_TABLE_2, .5169, .1692),
        "sr-gnn": _row(SRIEM_TABLE_2, .5073, .1759),
        "sr-iem": _row(SRIEM_TABLE_2, .5235, .1764),
    },
    "yoochoose1_64": {
        "pop": _row(NARM_TABLE_3, .0671, .0165),
        "s-pop": _row(NARM_TABLE_3, .3044, .1835),
        "item-knn": _row(NARM_TABLE_3, .5160, .2181),
        "bpr-mf": _row(NARM_TABLE_3, .3131, .1208),
        "fpmc": _row(NARM_TABLE_3, .4562, .1501),
        "gru4rec": _row(NARM_TABLE_3, .6064, .2289),
        "narm": _row(SRIEM_TABLE_2, .6832, .2863),
        "stamp": _row(SRIEM_TABLE_2, .6874, .2967),
        "csrm": _row(SRIEM_TABLE_2, .6985, .2971),
        "sr-gnn": _row(SRIEM_TABLE_2, .7057, .3094),
        "sr-iem": _row(SRIEM_TABLE_2, .7115, .3171),
    },
}


# A paper's own rows beside PUBLISHED's, on the same splits, keyed "<model> <setting>": ablations and
# variants (nextclick.reproduce compares them with runs of those settings), and NARM's own Table 3 row
# where SR-GNN and SR-IEM list another MRR@20 (28.63). Sources: dsan_reference.md §4 (DSAN Table 3),
# model_zoo.md §2.9, §2.10 (NARM Tables 2-4, Yoochoose 1/64; Table 4 at d = 100).
VARIANTS: dict[str, dict[str, dict]] = {
    "retailrocket": {
        "dsan variant=ns": _row(DSAN_TABLE_3, .5322, .3000),
        "dsan variant=nt": _row(DSAN_TABLE_3, .5646, .3040),
        "dsan variant=da": _row(DSAN_TABLE_3, .5600, .3010),
    },
    "yoochoose1_64": {
        "narm (NARM Table 3)": _row(NARM_TABLE_3, .6832, .2876),
        "improved gru-rec": _row(NARM_TABLE_3, .6784, .2900),
        "narm decoder=fc": _row(NARM_TABLE_2, .6767, .2917),
        "narm encoder=global": _row(NARM_TABLE_4, .6815, .2837),
        "narm encoder=local": _row(NARM_TABLE_4, .6810, .2838),
    },
}

# Published on another preprocessing of the same data, never comparable with ours (protocols.md): DSAN's
# own Diginetica split (prefixes of length >= 2, 44,279 test cases; dsan_reference.md §4) and NARM's
# Diginetica with clicks not sorted by time (model_zoo.md §2.10, §4). For orientation beside our numbers.
OTHER_SPLITS: dict[str, dict[str, dict[str, dict]]] = {
    "diginetica": {
        "DSAN": {
            "s-pop": _row(DSAN_TABLE_2, .2409, .1393, .2389, .1392),
            "fpmc": _row(DSAN_TABLE_2, .2571, .0765, .1807, .0713),
            "sknn": _row(DSAN_TABLE_2, .4835, .1649, .3661, .1561),
            "stan": _row(DSAN_TABLE_2, .4993, .1759, .3820, .1678),
            "gru4rec": _row(DSAN_TABLE_2, .3927, .1059, .2617, .0969),
            "stamp": _row(DSAN_TABLE_2, .4647, .1489, .3349, .1399),
            "sr-gnn": _row(DSAN_TABLE_2, .5050, .1763, .3772, .1675),
            "gc-san": _row(DSAN_TABLE_2, .5084, .1779, .3786, .1689),
            "bert4rec": _row(DSAN_TABLE_2, .4878, .1425, .3461, .1327),
            "cosan": _row(DSAN_TABLE_2, .4834, .1522, .3475, .1429),
            "dsan": _row(DSAN_TABLE_2, .5376, .1899, .4029, .1805),
            "dsan variant=ns": _row(DSAN_TABLE_3, .5199, .1858),
            "dsan variant=nt": _row(DSAN_TABLE_3, .5348, .1838),
            "dsan variant=da": _row(DSAN_TABLE_3, .5340, .1876),
        },
        "NARM": {
            "narm": _row(NARM_TABLE_3, .6258, .2735),
            "narm decoder=fc": _row(NARM_TABLE_2, .5784, .2477),
            "narm encoder=global": _row(NARM_TABLE_4, .6188, .2651),
            "narm encoder=local": _row(NARM_TABLE_4, .6171, .2604),
        },
    },
}


def published(dataset: str, model: str) -> dict | None:
    """The published row for `model` on `dataset` ({metric: value, "source": ...}), or None."""
    return PUBLISHED.get(dataset, {}).get(model)
