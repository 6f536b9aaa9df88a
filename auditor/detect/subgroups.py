"""Subgroups a class's maps reveal (spectral relevance analysis, Lapuschkin et al. 2019,
"Unmasking Clever Hans predictors"): images of one class whose maps look alike, such as the
images with a watermark in a corner, while the class as a whole looks fine.

Per class, while the audit streams: the subgroup method's map of each image (default
gradient x input: pixel-level relevance, as the paper's LRP maps; a CAM at the 8 x 8 cells
of a small input blurs a corner mark into the object's surround, and its clusters follow
where the object sits), pooled to a ``GRID`` x ``GRID`` grid and scaled to unit mass, into
a bounded sample (at most ``keep`` maps, chosen by a per-image seeded random key, so the
sample depends neither on the batch order nor on a resume). After the stream: a symmetric
k-nearest-neighbour affinity between the maps, the eigenvalues of its normalised Laplacian,
the number of clusters at the largest eigengap (1: no subgroups), and spectral clustering
(scikit-learn) into that many. Each subgroup is then judged by the class rule on its
members, beside the other classes' images, with its maps also held against the rest of its
class's (:func:`class_subgroups`).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.sparse import csgraph
from sklearn.cluster import SpectralClustering
from sklearn.neighbors import kneighbors_graph

from auditor.config import DetectConfig
from auditor.detect.findings import ClassResult
from auditor.detect.maps import GRID, MapSample
from auditor.detect.rule import class_results, off_object_vs_class, with_attribution


def cluster_count(affinity: np.ndarray, *, max_k: int) -> int:
    """The number of clusters at the largest gap between consecutive eigenvalues of the
    normalised Laplacian of ``affinity`` (ndarray[n, n], symmetric), among 1..``max_k``."""
    laplacian = csgraph.laplacian(affinity, normed=True)
    values = np.linalg.eigvalsh(laplacian)[: max_k + 1]
    if values.size < 2:
        return 1
    return int(np.argmax(np.diff(values))) + 1


def subgroups_of(
    maps: torch.Tensor, *, max_k: int = 6, neighbours: int = 10, min_size: int, seed: int = 0
) -> np.ndarray:
    """Cluster labels (ndarray[n] of 0..k-1; all 0 when there is one group) of the small
    maps (Tensor[n, GRID * GRID]). Fewer than two clusters' worth of ``min_size`` images are
    not split."""
    n = maps.shape[0]
    if n < 2 * min_size or n <= neighbours:
        return np.zeros(n, dtype=int)
    points = maps.double().numpy()
    graph = kneighbors_graph(points, n_neighbors=neighbours, include_self=False).toarray()
    affinity = np.maximum(graph, graph.T)
    k = cluster_count(affinity, max_k=min(max_k, n // min_size))
    if k < 2:
        return np.zeros(n, dtype=int)
    parts, components = csgraph.connected_components(affinity, directed=False)
    if parts == k:  # the graph falls apart into exactly the clusters the eigengap counts
        return np.asarray(components, dtype=int)
    clustering = SpectralClustering(k, affinity="precomputed", random_state=seed)
    with warnings.catch_warnings():  # a disconnected graph is what the eigengap has counted
        warnings.filterwarnings("ignore", "Graph is not fully connected", UserWarning)
        return np.asarray(clustering.fit_predict(affinity), dtype=int)


@dataclass(frozen=True)
class Subgroup:
    """One cluster of a class's maps: its members (dataset positions), its mean small map
    (Tensor[GRID, GRID]) and the class rule's result on its members."""

    label: int
    number: int
    of: int
    members: list[int]
    mean_map: torch.Tensor
    result: ClassResult


def class_subgroups(
    samples: pd.DataFrame,
    kept: MapSample,
    label: int,
    class_names: Sequence[str],
    methods: Sequence[str],
    config: DetectConfig,
    *,
    untrusted: Mapping[str, str] | None = None,
    donors: Collection[int] | None = None,
) -> list[Subgroup]:
    """The subgroups of class ``label`` (none when its maps form one group), each judged by
    the class rule on its members beside every other class's images, with one more piece of
    attribution evidence than a class has: its maps sit further off the object than those of
    the rest of its class (:func:`~auditor.detect.rule.off_object_vs_class`). A corner mark
    the model reads on some of a class's images moves little of a map's mass off a large
    object, but moves it consistently."""
    positions, maps = kept.ordered()
    clusters = subgroups_of(maps, min_size=config.min_n, seed=config.seed)
    k = int(clusters.max()) + 1 if clusters.size else 0
    if k < 2:
        return []
    scored = samples[samples["skip_reason"].isna()]
    own = scored[scored["label"] == label]
    driving = [m for m in methods if m not in (untrusted or {})]
    found = []
    for number in range(k):
        chosen = np.flatnonzero(clusters == number)
        members = [positions[i] for i in chosen]
        subset = samples[(samples["label"] != label) | samples["sample"].isin(members)]
        result = class_results(
            subset, class_names, methods, config, untrusted=untrusted, donors=donors
        )[label]
        result = with_attribution(result, off_object_vs_class(
            own[own["sample"].isin(members)], own[~own["sample"].isin(members)], driving, config
        ), config)  # fmt: skip
        mean = maps[chosen].mean(0).view(GRID, GRID)
        found.append(Subgroup(label, number + 1, k, members, mean, result))
    return found
