"""A pure-torch GraphSAGE cell-graph classifier, its training, evaluation and a graph-statistics baseline.

Why plain torch, not `torch_geometric`: a GraphSAGE layer with mean aggregation is ~20 lines
(`out = W_neigh · mean_j [h_j ‖ e_ij] + W_self · h_i`, PyG's `SAGEConv` with `aggr="mean"` plus edge
features; a probe on the project machine found such a layer gives PyG's outputs exactly and trains as
fast on CPU); PyG is a heavy optional dependency, and its `SAGEConv` takes no edge features. Here edge features are concatenated to each neighbour's message, so they are aggregated
onto nodes and receive attributions.

Pooling: GFT uses sum + max. With sum pooling the node count alone can separate a dense class, and
integrated gradients then credit features that do not differ between classes. Measured here
(benchmarks/bench_knowledge.py, docs/knowledge.md): what fixes that is the `local_density` node
feature (dense class credited to density 0% of the time without it, 100% with it, under both
poolings); with it, mean + max and sum + max are equally faithful (tumor: 0.96 vs 0.93 whole mode,
1.0 vs 1.0 focus mode). `mean+max` is the default — marginally more faithful and its graph vector does
not grow with the patch size; `sum+max` reproduces GFT's choice (`pooling="sum+max"`, CLI `--pooling`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .graph import EDGE_FEATURES, NODE_FEATURES, CellGraph, graph_statistics

POOLINGS = ("mean+max", "sum+max")


@dataclass
class Scaler:
    """Z-scores of node and edge features, fitted on the training graphs."""

    node_mean: list[float]
    node_std: list[float]
    edge_mean: list[float]
    edge_std: list[float]

    @classmethod
    def fit(cls, graphs: list[CellGraph]) -> Scaler:
        """Means and standard deviations over all nodes / edges of `graphs`."""
        x = np.concatenate([g.node_features for g in graphs] or [np.zeros((0, len(NODE_FEATURES)))])
        e = np.concatenate([g.edge_features for g in graphs] or [np.zeros((0, len(EDGE_FEATURES)))])

        def stats(a: np.ndarray, width: int) -> tuple[list[float], list[float]]:
            if len(a) == 0:
                return [0.0] * width, [1.0] * width
            return a.mean(0).tolist(), np.where(a.std(0) > 1e-6, a.std(0), 1.0).tolist()

        nm, ns = stats(x, len(NODE_FEATURES))
        em, es = stats(e, len(EDGE_FEATURES))
        return cls(nm, ns, em, es)

    def nodes(self, x: np.ndarray) -> np.ndarray:
        """Scaled node features."""
        return ((x - np.asarray(self.node_mean)) / np.asarray(self.node_std)).astype(np.float32)

    def edges(self, e: np.ndarray) -> np.ndarray:
        """Scaled edge features."""
        return ((e - np.asarray(self.edge_mean)) / np.asarray(self.edge_std)).astype(np.float32)


@dataclass
class Batch:
    """Several graphs as one disjoint graph (the usual mini-batching of graph networks)."""

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    num_graphs: int


def collate(graphs: list[CellGraph], scaler: Scaler) -> Batch:
    """Stack scaled graphs into one `Batch` (node ids offset per graph)."""
    xs, es, eis, bs = [], [], [], []
    offset = 0
    for k, g in enumerate(graphs):
        xs.append(scaler.nodes(g.node_features))
        es.append(scaler.edges(g.edge_features))
        eis.append(g.edge_index + offset)
        bs.append(np.full(g.num_nodes, k, np.int64))
        offset += g.num_nodes
    return Batch(torch.from_numpy(np.concatenate(xs).reshape(-1, len(NODE_FEATURES))),
                 torch.from_numpy(np.concatenate(eis, 1).reshape(2, -1).astype(np.int64)),
                 torch.from_numpy(np.concatenate(es).reshape(-1, len(EDGE_FEATURES))),
                 torch.from_numpy(np.concatenate(bs)), len(graphs))


class SAGELayer(nn.Module):
    """GraphSAGE with mean aggregation; each neighbour's message carries the edge's features."""

    def __init__(self, in_dim: int, edge_dim: int, out_dim: int):
        super().__init__()
        self.neigh = nn.Linear(in_dim + edge_dim, out_dim)
        self.self_ = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        """One round of message passing (source → target)."""
        src, dst = edge_index
        msg = torch.cat([h[src], edge_attr], dim=1)
        agg = torch.zeros(h.shape[0], msg.shape[1], dtype=h.dtype, device=h.device).index_add_(0, dst, msg)
        deg = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device).index_add_(
            0, dst, torch.ones_like(dst, dtype=h.dtype))
        agg = agg / deg.clamp(min=1).unsqueeze(1)
        return self.neigh(agg) + self.self_(h)


class CellGNN(nn.Module):
    """GraphSAGE layers → graph pooling (mean+max or sum+max) → MLP head."""

    def __init__(self, num_classes: int, hidden: int = 32, layers: int = 2, pooling: str = "mean+max",
                 dropout: float = 0.1):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}")
        self.config = {"num_classes": num_classes, "hidden": hidden, "layers": layers, "pooling": pooling,
                       "dropout": dropout}
        dims = [len(NODE_FEATURES)] + [hidden] * layers
        self.convs = nn.ModuleList(SAGELayer(dims[i], len(EDGE_FEATURES), dims[i + 1]) for i in range(layers))
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))
        self.pooling = pooling

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor, batch: torch.Tensor,
              num_graphs: int) -> torch.Tensor:
        """Pooled graph vectors (num_graphs, 2·hidden); an empty graph pools to zeros."""
        h = x
        for conv in self.convs:
            h = torch.relu(conv(h, edge_index, edge_attr))
        width = h.shape[1]
        summed = torch.zeros(num_graphs, width, dtype=h.dtype).index_add_(0, batch, h)
        if self.pooling == "mean+max":
            count = torch.zeros(num_graphs, dtype=h.dtype).index_add_(0, batch, torch.ones_like(batch, dtype=h.dtype))
            first = summed / count.clamp(min=1).unsqueeze(1)
        else:
            first = summed
        # h ≥ 0 after ReLU, so a zero start equals the max over a non-empty graph and 0 for an empty one.
        mx = torch.zeros(num_graphs, width, dtype=h.dtype).scatter_reduce(
            0, batch.unsqueeze(1).expand(-1, width), h, reduce="amax", include_self=True)
        return torch.cat([first, mx], dim=1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor, batch: torch.Tensor,
                num_graphs: int) -> torch.Tensor:
        """Class logits (num_graphs, num_classes)."""
        return self.head(self.embed(x, edge_index, edge_attr, batch, num_graphs))


@dataclass
class TrainedGNN:
    """A trained classifier with everything needed to apply it again."""

    model: CellGNN
    scaler: Scaler
    classes: list[str]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0

    def _batch(self, graphs: list[CellGraph]) -> Batch:
        return collate(graphs, self.scaler)

    @torch.no_grad()
    def predict_proba(self, graphs: list[CellGraph], batch_size: int = 64) -> np.ndarray:
        """Class probabilities (n, classes)."""
        self.model.eval()
        out = [torch.softmax(self.model(*_args(self._batch(graphs[i:i + batch_size]))), 1).numpy()
               for i in range(0, len(graphs), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    @torch.no_grad()
    def embeddings(self, graphs: list[CellGraph], batch_size: int = 64) -> np.ndarray:
        """Pooled graph vectors (the retrieval embedding)."""
        self.model.eval()
        out = [self.model.embed(*_args(self._batch(graphs[i:i + batch_size]))).numpy()
               for i in range(0, len(graphs), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 2 * self.model.config["hidden"]))

    def predict(self, graphs: list[CellGraph]) -> list[str]:
        """Predicted class names."""
        return [self.classes[i] for i in self.predict_proba(graphs).argmax(1)]

    def save(self, directory: str | Path) -> Path:
        """`gnn.safetensors` + `gnn.json` (config, classes, scaler, history) in `directory`."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(directory / "gnn.safetensors"))
        (directory / "gnn.json").write_text(json.dumps({
            "config": self.model.config, "classes": self.classes, "scaler": asdict(self.scaler),
            "node_features": list(NODE_FEATURES), "edge_features": list(EDGE_FEATURES),
            "best_epoch": self.best_epoch, "history": self.history}, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TrainedGNN:
        """Reload what `save` wrote (safetensors: no pickle)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / "gnn.json").read_text())
        model = CellGNN(**meta["config"])
        model.load_state_dict(load_file(str(directory / "gnn.safetensors")))
        model.eval()
        return cls(model, Scaler(**meta["scaler"]), meta["classes"], meta.get("history", []), meta.get("best_epoch", 0))


def _args(b: Batch) -> tuple[Any, ...]:
    return b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in `y_true`."""
    recalls = [float((y_pred[y_true == c] == c).mean()) for c in range(num_classes) if (y_true == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def train_gnn(train: list[CellGraph], validation: list[CellGraph], classes: list[str] | None = None, *,
              seed: int = 0, hidden: int = 32, layers: int = 2, pooling: str = "mean+max", lr: float = 5e-3,
              weight_decay: float = 1e-4, batch_size: int = 16, max_epochs: int = 150, patience: int = 25,
              progress: bool = False) -> TrainedGNN:
    """Train on `train`, keep the weights of the best validation epoch (balanced accuracy, then loss).

    Seeded: same graphs and seed give the same weights. Stops after `patience` epochs without
    improvement. Class-weighted cross-entropy so rare classes count.
    """
    from tqdm.auto import tqdm

    classes = sorted({g.label for g in train}) if classes is None else list(classes)
    index = {c: i for i, c in enumerate(classes)}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    scaler = Scaler.fit(train)
    model = CellGNN(len(classes), hidden=hidden, layers=layers, pooling=pooling)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    y_train = np.array([index[g.label] for g in train])
    counts = np.bincount(y_train, minlength=len(classes)).astype(float)
    weights = torch.tensor(np.where(counts > 0, len(y_train) / (len(classes) * np.maximum(counts, 1)), 0.0),
                           dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    val = validation or train
    y_val = np.array([index[g.label] for g in val])
    val_batch = collate(val, scaler)
    best: tuple[float, float] = (-1.0, math.inf)
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    trained = TrainedGNN(model, scaler, classes)
    stale = 0
    bar = tqdm(range(max_epochs), desc="training GNN", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = rng.permutation(len(train))
        total = 0.0
        for i in range(0, len(order), batch_size):
            chunk = [train[j] for j in order[i:i + batch_size]]
            b = collate(chunk, scaler)
            opt.zero_grad()
            loss = loss_fn(model(*_args(b)), torch.from_numpy(y_train[order[i:i + batch_size]]))
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(chunk)
        model.eval()
        with torch.no_grad():
            logits = model(*_args(val_batch))
            val_loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(y_val)))
        bacc = balanced_accuracy(y_val, logits.argmax(1).numpy(), len(classes))
        trained.history.append({"epoch": epoch, "train_loss": total / len(train), "val_loss": val_loss,
                                "val_balanced_accuracy": bacc})
        if bacc > best[0] or (bacc == best[0] and val_loss < best[1]):
            best, stale, trained.best_epoch = (bacc, val_loss), 0, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
        bar.set_postfix(val_bacc=f"{bacc:.3f}")
    model.load_state_dict(best_state)
    model.eval()
    return trained


def classification_report(predictions: list[str], references: list[str], classes: list[str]) -> dict[str, Any]:
    """Balanced accuracy, macro P/R/F1, per-class table and confusion matrix (the shared metric module)."""
    from pathinsight_models.metrics.classification.classification import compute

    return compute(predictions, references, classes)


def plot_confusion(report: dict[str, Any], path: str | Path, title: str = "GNN (test)") -> Path:
    """Confusion matrix PNG (rows: reference, columns: prediction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(report["confusion_matrix"])[:, :-1]  # no unparsed column: the GNN always answers
    labels = report["confusion_labels"][:-1]
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(labels), 1.0 + 0.7 * len(labels)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(f"{title}: balanced accuracy {report['balanced_accuracy']:.3f}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def baseline_statistics_lr(train: list[CellGraph], test: list[CellGraph], classes: list[str],
                           seed: int = 0) -> list[str]:
    """Logistic regression on 18 graph statistics (standardised): predictions for `test`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.stack([graph_statistics(g) for g in train])
    y = [g.label for g in train]
    if len(set(y)) < 2:
        return [y[0]] * len(test)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    clf.fit(x, y)
    return list(clf.predict(np.stack([graph_statistics(g) for g in test])))
