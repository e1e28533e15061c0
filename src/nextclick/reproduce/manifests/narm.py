"""NARM (Li et al., CIKM 2017): what each of its tables and figures needs from nextclick, as data.

Published numbers: nextclick.published. NARM's own experiments on Diginetica used clicks not sorted by
time (protocols.md), so its diginetica numbers (OTHER_SPLITS["diginetica"]["NARM"]) are shown for
orientation only; on our sorted split the comparable NARM row is SR-GNN's re-run as SR-IEM Table 2
lists it. NARM's tables are numbered as in the paper: Table 2 the decoders, Table 3 the results, Table
4 the encoders, Table 5 by session length. Settings are the non-default ones a run asks for (its run id).
"""

from nextclick.reproduce.manifests.baselines import NARM_ROW, classical_rows, gru4rec_row

SEEDS = [1, 2, 3]
NARM = {**NARM_ROW, "seeds": SEEDS}

PAPER = {
    "name": "narm",
    "title": "NARM: Neural Attentive Session-based Recommendation (Li et al., CIKM 2017)",
    "proposed": "NARM",
    "items": [
        {
            "id": "table3", "kind": "metrics", "title": "Table 3: NARM against the baselines",
            "datasets": ["yoochoose1_64", "diginetica"], "metrics": ["HR@20", "MRR@20"],
            "note": "HR@20 is the paper's Recall@20. yoochoose1_64: NARM Table 3's own rows (its NARM MRR@20 is "
                    "28.76; SR-GNN and SR-IEM list 28.63). diginetica: the rows measured on the time-sorted split "
                    "(SR-GNN's and SR-IEM's re-runs); NARM's own Diginetica column is on unsorted clicks.",
            "rows": [
                *classical_rows("GRU-Rec"),
                {"label": "Improved GRU-Rec", "model": None, "published": "improved gru-rec"},
                {**NARM, "published": {"yoochoose1_64": "narm (NARM Table 3)"}},
            ],
        },
        {
            "id": "table2", "kind": "metrics", "title": "Table 2: bi-linear against fully connected decoder",
            "datasets": ["yoochoose1_64"], "metrics": ["HR@20", "MRR@20"],
            "note": "The diginetica column of NARM's Table 2 is on unsorted clicks (fully connected: 57.84 / 24.77).",
            "rows": [
                {"label": "NARM, fully connected decoder", "model": "narm", "settings": {"decoder": "fc"},
                 "published": "narm decoder=fc"},
                {**NARM, "published": {"yoochoose1_64": "narm (NARM Table 3)"}},
            ],
        },
        {
            "id": "table4", "kind": "metrics", "title": "Table 4: global, local and hybrid encoders",
            "datasets": ["yoochoose1_64"], "metrics": ["HR@20", "MRR@20"],
            "note": "NARM_global is the GRU's last state alone, NARM_local the attention alone, NARM both. The "
                    "diginetica column of Table 4 is on unsorted clicks (global 61.88 / 26.51, local 61.71 / 26.04).",
            "rows": [
                {"label": "NARM_global", "model": "narm", "settings": {"encoder": "global"},
                 "published": "narm encoder=global"},
                {"label": "NARM_local", "model": "narm", "settings": {"encoder": "local"},
                 "published": "narm encoder=local"},
                {**NARM, "published": {"yoochoose1_64": "narm (NARM Table 3)"}},
            ],
        },
        {
            "id": "table5", "kind": "by_length", "title": "Table 5: by session length",
            "datasets": ["yoochoose1_64", "diginetica"], "metrics": ["HR@20", "MRR@20"],
            "rows": [gru4rec_row("GRU-Rec", ("diginetica", "yoochoose1_64")), {**NARM, "seeds": [1]}],
            "published_note": "values not in our references",
            "note": "Prefix length = clicks before the target; lengths of 20 or more are pooled.",
        },
        {
            "id": "attention", "kind": "explain", "title": "Attention visualisation",
            "files": ["docs/figures/narm_explain_diginetica.png", "docs/figures/narm_explain_diginetica.json"],
            "command": "nextclick explain runs/diginetica/narm 9671 41527 8848 20991 20991 27255 9671 15846 -k 5 "
                       "--out docs/figures/narm_explain_diginetica",
            "note": "The local encoder's weights alpha_tj over one test session's clicks (docs/narm.md, "
                    "Explanations). Over the whole test set: `nextclick explain RUN --test` writes "
                    "click_weights.json beside the run's result.",
        },
    ],
}
