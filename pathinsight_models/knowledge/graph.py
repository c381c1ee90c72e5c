"""Cell graphs: nuclei as nodes with morphology features, edges to near neighbours, quadrants.

Plain numpy data classes; the GNN (`gnn.py`) turns them into tensors. Node features
(`NODE_FEATURES`): area, perimeter, eccentricity, solidity, orientation as sin/cos of 2θ (θ and θ+π
are the same axis, so 2θ makes the encoding continuous), mean hematoxylin optical density, and local
density (other nuclei within `density_radius` px). Local density is a node feature on purpose: with
it, a "dense" class is something the attribution can credit to a feature instead of to the node
count (see docs/knowledge.md). Edges join each nucleus to its `k` nearest neighbours (or its Delaunay
neighbours) no farther than `max_distance` px, in both directions, with features length and the
absolute differences of area, eccentricity and hematoxylin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pathenhanceds.registry import Registry

from .segment import Nuclei, Segmenter, get_segmenter

NODE_FEATURES = ("area", "perimeter", "eccentricity", "solidity", "orientation_sin", "orientation_cos",
                 "hematoxylin", "local_density")
EDGE_FEATURES = ("length", "area_difference", "eccentricity_difference", "hematoxylin_difference")
QUADRANTS = ("upper-left", "upper-right", "lower-left", "lower-right")
# Words a sentence uses for a feature (several features share a word: orientation sin/cos).
FEATURE_WORDS = {
    "area": "area", "perimeter": "perimeter", "eccentricity": "eccentricity", "solidity": "solidity",
    "orientation_sin": "orientation", "orientation_cos": "orientation", "hematoxylin": "hematoxylin intensity",
    "local_density": "local density", "length": "edge length", "area_difference": "area difference",
    "eccentricity_difference": "eccentricity difference", "hematoxylin_difference": "hematoxylin difference",
}
EDGE_RULES = ("knn", "delaunay")
GRAPH_KINDS: Registry[type] = Registry("graph kind", fix="use one of: {names}")


@dataclass
class GraphConfig:
    """How graphs are built (recorded in the knowledge manifest)."""

    segmenter: str = "classical"
    edges: str = "knn"
    k: int = 5
    max_distance: float = 40.0
    density_radius: float = 20.0


@dataclass
class CellGraph:
    """One image's cell graph. Centroids are (row, col) pixels; edges are directed, both ways present."""

    node_features: np.ndarray  # (N, len(NODE_FEATURES)) float32
    edge_index: np.ndarray  # (2, E) int64, source -> target
    edge_features: np.ndarray  # (E, len(EDGE_FEATURES)) float32
    centroids: np.ndarray  # (N, 2) float32
    quadrant: np.ndarray  # (N,) int64 index into QUADRANTS
    image_size: tuple[int, int]
    label: str | None = None
    id: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        """Number of nuclei."""
        return int(self.node_features.shape[0])

    @property
    def num_edges(self) -> int:
        """Number of directed edges."""
        return int(self.edge_index.shape[1])

    def edge_quadrant(self) -> np.ndarray:
        """Quadrant of each edge's midpoint."""
        if self.num_edges == 0:
            return np.zeros(0, np.int64)
        mid = (self.centroids[self.edge_index[0]] + self.centroids[self.edge_index[1]]) / 2
        return quadrant_of(mid, self.image_size)


GRAPH_KINDS.register("cell", CellGraph)


def list_graph_kinds() -> list[str]:
    """Registered graph kinds (`cell` for H&E)."""
    return GRAPH_KINDS.names()


def quadrant_of(points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Quadrant index (QUADRANTS order) of (row, col) points."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    lower = points[:, 0] >= image_size[0] / 2
    right = points[:, 1] >= image_size[1] / 2
    return (lower.astype(np.int64) * 2 + right.astype(np.int64))


def node_features(nuclei: Nuclei, density_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 8), centroids (N, 2)) from a segmentation."""
    from scipy.spatial import cKDTree
    from skimage.measure import regionprops

    props = regionprops(nuclei.labels, intensity_image=nuclei.hematoxylin)
    if not props:
        return np.zeros((0, len(NODE_FEATURES)), np.float32), np.zeros((0, 2), np.float32)
    cents = np.array([p.centroid for p in props], dtype=np.float32)
    rows = []
    for p in props:
        theta = float(p.orientation)
        rows.append([p.area, p.perimeter, p.eccentricity, p.solidity, np.sin(2 * theta), np.cos(2 * theta),
                     p.intensity_mean, 0.0])
    feats = np.asarray(rows, dtype=np.float32)
    tree = cKDTree(cents)
    feats[:, -1] = np.array([len(n) - 1 for n in tree.query_ball_point(cents, density_radius)], np.float32)
    return feats, cents


def build_edges(cents: np.ndarray, rule: str, k: int, max_distance: float) -> np.ndarray:
    """Undirected neighbour pairs as a (2, E) directed edge index holding both directions."""
    n = len(cents)
    if n < 2:
        return np.zeros((2, 0), np.int64)
    pairs: set[tuple[int, int]] = set()
    if rule == "knn":
        from scipy.spatial import cKDTree

        dist, idx = cKDTree(cents).query(cents, k=min(k + 1, n))
        for i in range(n):
            for d, j in zip(dist[i, 1:], idx[i, 1:], strict=True):
                if d <= max_distance and j < n:
                    pairs.add((min(i, int(j)), max(i, int(j))))
    elif rule == "delaunay":
        from scipy.spatial import Delaunay

        if n >= 3:
            try:
                tri = Delaunay(cents)
                for simplex in tri.simplices:
                    for a in range(3):
                        i, j = int(simplex[a]), int(simplex[(a + 1) % 3])
                        if np.hypot(*(cents[i] - cents[j])) <= max_distance:
                            pairs.add((min(i, j), max(i, j)))
            except Exception:  # collinear points: Qhull refuses; fall back to the pair rule below
                pairs = set()
        if not pairs:
            return build_edges(cents, "knn", 2, max_distance)
    else:
        raise ValueError(f"unknown edge rule {rule!r}; use one of {EDGE_RULES}")
    if not pairs:
        return np.zeros((2, 0), np.int64)
    und = np.array(sorted(pairs), dtype=np.int64).T
    return np.concatenate([und, und[::-1]], axis=1)


def edge_features(feats: np.ndarray, cents: np.ndarray, edge_index: np.ndarray) -> np.ndarray:
    """(E, 4): length, |Δ area|, |Δ eccentricity|, |Δ hematoxylin|."""
    if edge_index.shape[1] == 0:
        return np.zeros((0, len(EDGE_FEATURES)), np.float32)
    s, t = edge_index
    length = np.hypot(*(cents[s] - cents[t]).T)
    cols = [NODE_FEATURES.index(n) for n in ("area", "eccentricity", "hematoxylin")]
    diffs = np.abs(feats[s][:, cols] - feats[t][:, cols])
    return np.column_stack([length, diffs]).astype(np.float32)


def graph_from_nuclei(nuclei: Nuclei, config: GraphConfig | None = None, *, label: str | None = None,
                      id: str | None = None) -> CellGraph:
    """The cell graph of one segmentation."""
    config = config or GraphConfig()
    feats, cents = node_features(nuclei, config.density_radius)
    edge_index = build_edges(cents, config.edges, config.k, config.max_distance)
    size = tuple(int(v) for v in nuclei.labels.shape[:2])
    return CellGraph(feats, edge_index, edge_features(feats, cents, edge_index), cents,
                     quadrant_of(cents, size), size, label=label, id=id)


def image_to_graph(image: np.ndarray, config: GraphConfig | None = None, *, segmenter: Segmenter | None = None,
                   label: str | None = None, id: str | None = None) -> CellGraph:
    """Segment an RGB image and build its cell graph."""
    config = config or GraphConfig()
    segmenter = segmenter or get_segmenter(config.segmenter)
    return graph_from_nuclei(segmenter(np.asarray(image)), config, label=label, id=id)


def quadrant_vector(graph: CellGraph) -> np.ndarray:
    """GFT's 8-number summary: node density and edge density per quadrant (per 10,000 px²)."""
    h, w = graph.image_size
    area = (h / 2) * (w / 2) / 1e4
    nodes = np.bincount(graph.quadrant, minlength=4)[:4] / area
    edges = np.bincount(graph.edge_quadrant(), minlength=4)[:4] / 2 / area  # undirected edges
    return np.concatenate([nodes, edges]).astype(np.float32)


STAT_NAMES = ("nodes", "edges_per_node", *[f"mean_{n}" for n in NODE_FEATURES],
              *[f"std_{n}" for n in NODE_FEATURES])


def graph_statistics(graph: CellGraph) -> np.ndarray:
    """18 graph-level statistics (node count, edges per node, mean and std of each node feature).

    The input of the logistic-regression baseline reported beside the GNN.
    """
    n = graph.num_nodes
    if n == 0:
        return np.zeros(len(STAT_NAMES), np.float32)
    x = graph.node_features
    return np.concatenate([[n, graph.num_edges / 2 / n], x.mean(0), x.std(0)]).astype(np.float32)
