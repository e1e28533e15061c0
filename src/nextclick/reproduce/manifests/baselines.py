"""Rows several papers' tables share: the classical baselines of the SR-GNN-split tables (SR-IEM's and
NARM's), GRU4Rec run with its authors' settings per dataset (`--preset`; the settings are listed
because a run's id names them), NARM under its own protocol and STAMP with its diginetica setting."""

# NARM's own protocol on diginetica (docs/narm.md): validation on a random 10% of training cases and the
# first 19 clicks of a longer prefix, as the official code; yoochoose1_64 with our default protocol.
NARM_ROW = {"label": "NARM", "model": "narm", "by_dataset": {
    "diginetica": {"settings": {"truncate": "first", "validation": "random-cases"}}}}
# SR-GNN trained as its official code trains, on all training sessions (`--refit`: the epochs chosen on the
# last 10% of them, then a fresh model on all): the form that reaches its published rows on all three
# splits (docs/baselines.md; without the refit it is 0.7-2.9 HR@20 short), and the form of the seed
# models' own rows
SRGNN_ROW = {"label": "SR-GNN", "model": "sr-gnn", "settings": {"refit": True}}
# STAMP on diginetica clips its gradients at 110, as its official Diginetica config (nn_param.conf; docs/baselines.md)
STAMP_ROW = {"label": "STAMP", "model": "stamp", "by_dataset": {"diginetica": {"settings": {"max_grad_norm": 110}}}}

GRU4REC_BY_DATASET = {
    "retailrocket": {"preset": "retailrocket", "settings": {
        "loss": "bpr-max", "hidden_size": 224, "dropout_embedding": 0.5, "dropout_hidden": 0.05,
        "sample_alpha": 0.4, "bpreg": 1.95, "momentum": 0.4, "batch_size": 80}},
    "diginetica": {"preset": "diginetica", "settings": {
        "loss": "bpr-max", "hidden_size": 512, "dropout_embedding": 0.5, "dropout_hidden": 0.3,
        "sample_alpha": 0.3, "bpreg": 0.9, "elu_param": 1, "momentum": 0.15, "batch_size": 128}},
    "yoochoose1_64": {"preset": "yoochoose", "settings": {
        "hidden_size": 480, "dropout_hidden": 0.2, "sample_alpha": 0.2, "logq": 1, "bpreg": 0,
        "elu_param": 0, "lr": 0.07, "batch_size": 48}},
}


def gru4rec_row(label: str, datasets: tuple[str, ...]) -> dict:
    """GRU4Rec's row under the paper's `label`, on the datasets of its table."""
    return {"label": label, "model": "gru4rec", "by_dataset": {d: GRU4REC_BY_DATASET[d] for d in datasets}}


def classical_rows(gru4rec_label: str) -> list[dict]:
    """POP, S-POP, Item-KNN (tuned on validation), BPR-MF, FPMC and GRU4Rec on the SR-GNN splits."""
    return [
        {"label": "POP", "model": "pop"},
        {"label": "S-POP", "model": "s-pop"},
        {"label": "Item-KNN", "model": "item-knn", "settings": {"tune": True}},
        {"label": "BPR-MF", "model": "bpr-mf"},
        {"label": "FPMC", "model": "fpmc"},
        gru4rec_row(gru4rec_label, ("diginetica", "yoochoose1_64")),
    ]
