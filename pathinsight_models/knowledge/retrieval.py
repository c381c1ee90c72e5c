"""Similar-case retrieval: GFT's 8-number quadrant vector, and the GNN embedding.

Both indexes are z-scored vectors of the training images searched by Euclidean distance (numpy;
`faiss-cpu` is used when installed and asked for). Stored as one `.npz` per kind (no pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("quadrant", "embedding")


@dataclass
class Index:
    """Training vectors with their ids and labels."""

    kind: str
    vectors: np.ndarray  # (n, d) raw
    ids: list[str]
    labels: list[str]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def build(cls, kind: str, vectors: np.ndarray, ids: list[str], labels: list[str]) -> Index:
        """Index `vectors` (scaling fitted on them)."""
        v = np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        std = v.std(0) if len(v) else np.ones(v.shape[1], np.float32)
        return cls(kind, v, list(ids), list(labels), v.mean(0) if len(v) else np.zeros(v.shape[1], np.float32),
                   np.where(std > 1e-6, std, 1.0).astype(np.float32))

    def _scaled(self, v: np.ndarray) -> np.ndarray:
        return ((np.asarray(v, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def search(self, queries: np.ndarray, k: int = 1, *, exclude_self: bool = False, use_faiss: bool = False
               ) -> np.ndarray:
        """Row indices of the k nearest training vectors for each query (n_queries, k)."""
        base = self._scaled(self.vectors)
        q = self._scaled(np.asarray(queries).reshape(-1, base.shape[1]))
        kk = min(k + int(exclude_self), len(base))
        if use_faiss:
            import faiss  # optional

            index = faiss.IndexFlatL2(base.shape[1])
            index.add(base)
            _, idx = index.search(q, kk)
        else:
            d = ((q[:, None, :] - base[None, :, :]) ** 2).sum(-1)
            idx = np.argsort(d, axis=1, kind="stable")[:, :kk]
        return idx[:, 1:] if exclude_self else idx

    def save(self, path: str | Path) -> Path:
        """One npz file (string arrays as unicode, loadable with allow_pickle=False)."""
        path = Path(path)
        np.savez(path, kind=np.array(self.kind), vectors=self.vectors, ids=np.array(self.ids, dtype=str),
                 labels=np.array(self.labels, dtype=str), mean=self.mean, std=self.std)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Index:
        """Read what `save` wrote."""
        with np.load(path, allow_pickle=False) as z:
            return cls(str(z["kind"]), z["vectors"], z["ids"].tolist(), z["labels"].tolist(), z["mean"], z["std"])


def hit_rate(index: Index, queries: np.ndarray, labels: list[str], *, exclude_self: bool = False) -> float:
    """Share of queries whose nearest indexed neighbour has the query's label."""
    if len(labels) == 0 or len(index.ids) == 0:
        return float("nan")
    nearest = index.search(queries, 1, exclude_self=exclude_self)[:, 0]
    return float(np.mean([index.labels[j] == y for j, y in zip(nearest, labels, strict=True)]))


class CaseRetriever:
    """The k most similar training cases of a knowledge folder K for a new image (what chat puts in context).

    Loads K's index of `kind` (quadrant: GFT's vector; embedding: the GNN's pooled vector), the graph
    settings from K's manifest and, for embeddings, K's GNN; images come from K's `knowledge_stage1`
    train split.
    """

    def __init__(self, knowledge: str | Path, kind: str = "quadrant"):
        import json

        from pathenhanceds.errors import InputError

        from .graph import GraphConfig

        if kind not in KINDS:
            raise InputError(f"unknown retrieval index {kind!r}", fix=f"use one of: {', '.join(KINDS)}")
        self.root = Path(knowledge).expanduser()
        path = self.root / "index" / f"{kind}.npz"
        if not path.is_file():
            raise InputError("not a knowledge folder (no retrieval index)", file=path,
                             fix="pass the output of `pathinsight knowledge build`")
        self.kind = kind
        self.index = Index.load(path)
        manifest = json.loads((self.root / "manifest.json").read_text())
        settings = manifest["graph"]
        self.graph_config = GraphConfig(**{k: v for k, v in settings.items() if k != "kind"})
        # Nearest-neighbour label hit rate of each index, measured at build time on K's evaluation split.
        self.hit_rates: dict[str, float] = {k: v["hit_rate"] for k, v in manifest.get("retrieval", {}).items()}
        self.hit_rate_split: str | None = next(iter(manifest.get("retrieval", {}).values()), {}).get("split")
        self._gnn = None
        self._rows: dict[str, int] | None = None
        self._train = None

    def vector(self, image: object) -> np.ndarray:
        """The query vector of an RGB image (PIL or array)."""
        from .graph import image_to_graph, quadrant_vector

        graph = image_to_graph(np.asarray(image.convert("RGB") if hasattr(image, "convert") else image),
                               self.graph_config)
        if self.kind == "quadrant":
            return quadrant_vector(graph)
        if self._gnn is None:
            from .gnn import TrainedGNN

            self._gnn = TrainedGNN.load(self.root / "gnn")
        return self._gnn.embeddings([graph])[0]

    def search(self, image: object, k: int = 3, *, with_images: bool = True) -> list[dict[str, object]]:
        """[{id, label, rank, image}] of the k nearest training cases, nearest first."""
        nearest = self.index.search(self.vector(image)[None, :], k)[0]
        cases: list[dict[str, object]] = [
            {"id": self.index.ids[j], "label": self.index.labels[j], "rank": r} for r, j in enumerate(nearest)]
        if with_images:
            if self._train is None:
                from datasets import load_dataset

                self._train = load_dataset(str(self.root), "knowledge_stage1", split="train")
                self._rows = {rid.split("#")[0]: i for i, rid in enumerate(self._train["id"])}
            for case in cases:
                case["image"] = self._train[self._rows[case["id"]]]["images"][0]
        return cases
