"""Per-image knowledge tables: quadrant densities, the most important nodes and edges, label, GNN output.

One table (a plain dict) per image; `write_tables` stores them as one parquet file. What a table
"contains" for the grounding checks is `table_vocabulary(table)`: the feature words and quadrants of
its top nodes and edges (plus the densest quadrant, which the density question names).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .attribution import Attribution
from .gnn import TrainedGNN
from .graph import EDGE_FEATURES, FEATURE_WORDS, NODE_FEATURES, QUADRANTS, CellGraph, quadrant_vector

TOP_NODES = 5
TOP_EDGES = 3
TOP_FEATURES = 2


def _direction(value: float, mean: float) -> str:
    return "high" if value >= mean else "low"


def _top_features(scores: np.ndarray, names: tuple[str, ...], k: int) -> list[str]:
    order = np.argsort(-scores, kind="stable")[:k]
    return [names[i] for i in order]


def build_table(graph: CellGraph, attribution: Attribution, model: TrainedGNN, *, split: str,
                top_nodes: int = TOP_NODES, top_edges: int = TOP_EDGES) -> dict[str, Any]:
    """The knowledge table of one image (JSON-serialisable)."""
    qv = quadrant_vector(graph)
    scaler = model.scaler
    nodes = []
    node_scores = attribution.node_scores()
    for i in np.argsort(-node_scores, kind="stable")[:top_nodes]:
        feats = _top_features(attribution.node[i], NODE_FEATURES, TOP_FEATURES)
        nodes.append({
            "id": int(i), "score": float(node_scores[i]), "quadrant": QUADRANTS[int(graph.quadrant[i])],
            "row": float(graph.centroids[i, 0]), "col": float(graph.centroids[i, 1]),
            "features": feats,
            "values": [float(graph.node_features[i, NODE_FEATURES.index(f)]) for f in feats],
            "directions": [_direction(graph.node_features[i, NODE_FEATURES.index(f)],
                                      scaler.node_mean[NODE_FEATURES.index(f)]) for f in feats],
        })
    edges = []
    edge_scores = attribution.edge_scores()
    eq = graph.edge_quadrant()
    for j in np.argsort(-edge_scores, kind="stable")[:top_edges]:
        feats = _top_features(attribution.edge[j], EDGE_FEATURES, TOP_FEATURES)
        edges.append({
            "id": int(j), "source": int(graph.edge_index[0, j]), "target": int(graph.edge_index[1, j]),
            "score": float(edge_scores[j]), "quadrant": QUADRANTS[int(eq[j])], "features": feats,
            "values": [float(graph.edge_features[j, EDGE_FEATURES.index(f)]) for f in feats],
            "directions": [_direction(graph.edge_features[j, EDGE_FEATURES.index(f)],
                                      scaler.edge_mean[EDGE_FEATURES.index(f)]) for f in feats],
        })
    probs = attribution.probabilities
    return {
        "id": graph.id, "split": split, "label": graph.label,
        "predicted": model.classes[int(np.argmax(probs))], "explained_class": model.classes[attribution.target],
        "classes": list(model.classes), "probabilities": [float(p) for p in probs],
        "nodes": graph.num_nodes, "edges": graph.num_edges // 2,
        "node_density": {q: float(qv[k]) for k, q in enumerate(QUADRANTS)},
        "edge_density": {q: float(qv[4 + k]) for k, q in enumerate(QUADRANTS)},
        "top_nodes": nodes, "top_edges": edges,
    }


def densest_quadrant(table: dict[str, Any]) -> str:
    """The quadrant with the most nuclei per area (first in QUADRANTS order on ties)."""
    dens = table["node_density"]
    return max(QUADRANTS, key=lambda q: (dens[q], -QUADRANTS.index(q)))


def table_vocabulary(table: dict[str, Any]) -> dict[str, set[str]]:
    """What the table supports: top feature words, all feature words it lists, and quadrants."""
    top_words = {FEATURE_WORDS[f] for item in table["top_nodes"] + table["top_edges"] for f in item["features"][:1]}
    words = {FEATURE_WORDS[f] for item in table["top_nodes"] + table["top_edges"] for f in item["features"]}
    top_quadrants = {item["quadrant"] for item in table["top_nodes"][:1] + table["top_edges"][:1]}
    quadrants = {item["quadrant"] for item in table["top_nodes"] + table["top_edges"]}
    if table["nodes"]:
        quadrants.add(densest_quadrant(table))
    return {"top_features": top_words, "features": words, "top_quadrants": top_quadrants, "quadrants": quadrants}


# Longest first, so "area difference" is matched before "area".
_ALL_WORDS = sorted(set(FEATURE_WORDS.values()), key=len, reverse=True)


def named_terms(text: str) -> dict[str, set[str]]:
    """Feature words and quadrants a text names (case-insensitive, whole words)."""
    low = text.lower()
    features: set[str] = set()
    for word in _ALL_WORDS:
        pattern = r"\b" + re.escape(word) + r"\b"
        if re.search(pattern, low):
            features.add(word)
            low = re.sub(pattern, " ", low)
    quadrants = {q for q in QUADRANTS if re.search(r"\b" + re.escape(q) + r"\b", low)}
    return {"features": features, "quadrants": quadrants}


def write_tables(tables: list[dict[str, Any]], path: str | Path) -> Path:
    """All tables in one parquet file (nested columns)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Density dicts become JSON strings so every table has one flat, stable schema.
    rows = [{**t, "node_density": json.dumps(t["node_density"]), "edge_density": json.dumps(t["edge_density"])}
            for t in tables]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read_tables(path: str | Path) -> list[dict[str, Any]]:
    """Tables back from `write_tables`."""
    import json

    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    for r in rows:
        r["node_density"] = json.loads(r["node_density"])
        r["edge_density"] = json.loads(r["edge_density"])
    return rows
