"""Integrated gradients (captum) on node and edge features of a cell graph, for the predicted class.

captum adds a leading "scaling step" dimension to each input and would also repeat every tensor
passed through `additional_forward_args` along dim 0 — which corrupts an `edge_index` (its rows
would be stacked, not offset). So the forward function closes over the graph's structure and
turns the S scaled copies into one disjoint batch of S graphs itself.

Baseline: all-zero scaled features, i.e. every nucleus and edge at the training mean — IG then
says how each feature's deviation from an average nucleus moves the predicted class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .gnn import TrainedGNN
from .graph import EDGE_FEATURES, NODE_FEATURES, CellGraph


@dataclass
class Attribution:
    """IG scores of one graph: per node feature, per edge feature, and the class explained."""

    node: np.ndarray  # (N, len(NODE_FEATURES))
    edge: np.ndarray  # (E, len(EDGE_FEATURES))
    target: int
    probabilities: np.ndarray  # (classes,)
    delta: float  # IG completeness error (sum of attributions vs. logit difference)
    meta: dict = field(default_factory=dict)

    def node_scores(self) -> np.ndarray:
        """Per-node importance: sum of the node's feature attributions."""
        return self.node.sum(1) if len(self.node) else np.zeros(0)

    def edge_scores(self) -> np.ndarray:
        """Per-edge importance: sum of the edge's feature attributions."""
        return self.edge.sum(1) if len(self.edge) else np.zeros(0)

    def feature_ranking(self) -> list[str]:
        """Node features ordered by their total attribution over all nodes (largest first)."""
        if len(self.node) == 0:
            return []
        total = self.node.sum(0)
        return [NODE_FEATURES[i] for i in np.argsort(-total, kind="stable")]


def integrated_gradients(model: TrainedGNN, graph: CellGraph, *, target: int | None = None, n_steps: int = 32,
                         internal_batch_size: int = 32) -> Attribution:
    """IG of the target class logit (default: the predicted class) w.r.t. node and edge features."""
    from captum.attr import IntegratedGradients

    net = model.model.eval()
    x = torch.from_numpy(model.scaler.nodes(graph.node_features))
    e = torch.from_numpy(model.scaler.edges(graph.edge_features))
    ei = torch.from_numpy(graph.edge_index.astype(np.int64))
    n, m = x.shape[0], e.shape[0]
    with torch.no_grad():
        logits = net(x, ei, e, torch.zeros(n, dtype=torch.long), 1)
    probs = torch.softmax(logits, 1)[0].numpy()
    target = int(probs.argmax()) if target is None else int(target)
    if n == 0:
        return Attribution(np.zeros((0, len(NODE_FEATURES))), np.zeros((0, len(EDGE_FEATURES))), target, probs, 0.0)

    def forward(xs: torch.Tensor, es: torch.Tensor) -> torch.Tensor:
        steps = xs.shape[0]  # S scaled copies of the one graph -> one disjoint batch of S graphs
        offsets = (torch.arange(steps) * n).repeat_interleave(m)
        edge_index = ei.repeat(1, steps) + offsets
        batch = torch.arange(steps).repeat_interleave(n)
        return net(xs.reshape(steps * n, -1), edge_index, es.reshape(steps * m, -1), batch, steps)

    ig = IntegratedGradients(forward)
    inputs = (x.unsqueeze(0), e.unsqueeze(0))
    baselines = (torch.zeros_like(inputs[0]), torch.zeros_like(inputs[1]))
    (attr_x, attr_e), delta = ig.attribute(inputs, baselines=baselines, target=target, n_steps=n_steps,
                                           internal_batch_size=internal_batch_size,
                                           return_convergence_delta=True)
    return Attribution(attr_x[0].detach().numpy(), attr_e[0].detach().numpy(), target, probs,
                       float(delta.abs().max()))


def faithfulness(model: TrainedGNN, graphs: list[CellGraph], defining: dict[str, tuple[str, ...]],
                 n_steps: int = 32) -> dict[str, object]:
    """Share of correctly classified graphs of each defined class whose top-ranked IG feature is defining.

    `defining` maps class → the node features that define it (e.g. synthetic `DEFINING_FEATURES`).
    """
    hits: dict[str, list[bool]] = {c: [] for c in defining}
    for g in graphs:
        if g.label not in defining:
            continue
        a = integrated_gradients(model, g, n_steps=n_steps)
        if model.classes[a.target] != g.label or not len(a.node):
            continue
        hits[g.label].append(a.feature_ranking()[0] in defining[g.label])
    per_class = {c: (float(np.mean(v)) if v else float("nan")) for c, v in hits.items()}
    every = [h for v in hits.values() for h in v]
    return {"top_feature_share": float(np.mean(every)) if every else float("nan"), "per_class": per_class,
            "graphs": len(every)}


def focus_share(attribution: Attribution, graph: CellGraph, focus: tuple[float, float, float], k: int = 5) -> float:
    """Share of the top-k IG nodes whose centroid lies inside the (row, col, radius) focus (+10% margin)."""
    scores = attribution.node_scores()
    if len(scores) == 0:
        return float("nan")
    top = np.argsort(-scores, kind="stable")[:k]
    d = np.hypot(graph.centroids[top, 0] - focus[0], graph.centroids[top, 1] - focus[1])
    return float((d <= focus[2] * 1.1).mean())
