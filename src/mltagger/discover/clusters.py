"""Grouping the items the classifier could not place: embeddings in, cluster labels out.

Three methods, chosen in conf/discover.yaml (`discover.cluster`): `hdbscan` (scikit-learn's
HDBSCAN: clusters of any number and shape, and items that belong to none are left out as noise,
-1, so a proposal is not padded with strays), `agglomerative` (Ward linkage cut at a distance:
every item in some cluster) and `kmeans` (one cluster per `items_per_cluster` items of the
window, so the number grows with the window). Clusters under `min_cluster_size` are noise in all
three. An optional PCA first (`pca`: components, 0 = none): density-based
clustering works poorly in 384 dimensions, where all distances look alike.

The embeddings come from the base sentence encoder (`mltagger.models.encoder`), unit length, so
Euclidean distance orders pairs as the cosine does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mltagger.core.errors import ConfigError

METHODS = ("hdbscan", "agglomerative", "kmeans")


@dataclass(frozen=True)
class ClusterParams:
    """The clustering parameters (conf/discover.yaml `discover.cluster`)."""

    method: str = "hdbscan"
    # PCA components before clustering (0: cluster the embeddings as they are)
    pca: int = 0
    # hdbscan: the smallest group called a cluster, and how conservative the density estimate is
    min_cluster_size: int = 8
    min_samples: int | None = None
    # hdbscan: "eom" (fewer, larger clusters) or "leaf" (more, smaller, purer ones)
    selection: str = "eom"
    # agglomerative: the Ward distance at which the tree is cut
    distance_threshold: float = 1.0
    # kmeans: k = round(window items / items_per_cluster), at least 2
    items_per_cluster: int = 40
    seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> ClusterParams:
        """From a mapping (the Hydra node), refusing unknown keys and methods in one line."""
        values = dict(cfg)
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"discover.cluster: unknown keys {sorted(unknown)}")
        params = cls(**values)
        if params.method not in METHODS:
            raise ConfigError(f"discover.cluster.method must be one of {METHODS}")
        if params.min_cluster_size < 2 or params.pca < 0:
            raise ConfigError("discover.cluster: min_cluster_size >= 2 and pca >= 0 please")
        return params

    def as_dict(self) -> dict:
        return asdict(self)


def reduce(embeddings: np.ndarray, params: ClusterParams) -> np.ndarray:
    """The vectors the clustering sees: PCA to `params.pca` components, when set and smaller
    than what the window allows, else the embeddings."""
    x = np.asarray(embeddings, dtype=np.float64)
    k = min(params.pca, x.shape[0] - 1, x.shape[1])
    if params.pca <= 0 or k < 2:
        return x
    from sklearn.decomposition import PCA

    return PCA(n_components=k, random_state=params.seed).fit_transform(x)


def cluster(embeddings: np.ndarray, params: ClusterParams) -> np.ndarray:
    """One label per row: 0..K-1 for the clusters, -1 for noise (hdbscan only). Fewer rows than
    `min_cluster_size` make no cluster."""
    n = len(embeddings)
    if n < max(params.min_cluster_size, 2):
        return np.full(n, -1, dtype=int)
    x = reduce(embeddings, params)
    if params.method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        model = AgglomerativeClustering(
            n_clusters=None, distance_threshold=params.distance_threshold, linkage="ward"
        )
        return drop_small(model.fit_predict(x), params.min_cluster_size)
    if params.method == "kmeans":
        from sklearn.cluster import KMeans

        k = max(2, min(n, round(n / max(params.items_per_cluster, 1))))
        model = KMeans(n_clusters=k, n_init=10, random_state=params.seed)
        return drop_small(model.fit_predict(x), params.min_cluster_size)
    from sklearn.cluster import HDBSCAN

    model = HDBSCAN(
        min_cluster_size=params.min_cluster_size,
        min_samples=params.min_samples,
        cluster_selection_method=params.selection,
        copy=True,
    )
    return model.fit_predict(x).astype(int)


def drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Clusters smaller than `min_size` become noise (-1); the rest are renumbered 0..K-1 by
    first appearance, so labels stay comparable between methods."""
    labels = np.asarray(labels, dtype=int)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    keep = [int(i) for i, c in zip(ids, counts, strict=True) if c >= min_size]
    order = {k: j for j, k in enumerate(dict.fromkeys(int(v) for v in labels if v in keep))}
    return np.array([order.get(int(v), -1) for v in labels], dtype=int)
