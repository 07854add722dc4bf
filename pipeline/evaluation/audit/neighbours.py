"""Each image's nearest neighbours by cosine similarity of the embeddings, without an N x N matrix: faiss (exact
inner product search) when it is installed and the set is large, else scikit-learn's `NearestNeighbors`, which
computes distances in bounded chunks (`working_memory`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# From this many images on, faiss (when installed) searches the neighbours; below, scikit-learn is as fast.
FAISS_ABOVE = 20_000


@dataclass
class Neighbours:
    """The k nearest other images of every image: indices and cosine similarities [n, k], most similar first."""

    indices: np.ndarray
    similarities: np.ndarray
    backend: str

    def knn_graph(self):
        """The neighbours as the sparse cosine-distance graph cleanlab's Datalab takes (`knn_graph`)."""
        from scipy.sparse import csr_matrix

        n, k = self.indices.shape
        distances = np.clip(1.0 - self.similarities, 0.0, None)
        return csr_matrix((distances.ravel(), self.indices.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))


def _search(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, str]:
    if len(features) > FAISS_ABOVE:
        try:
            import faiss
        except ImportError:
            faiss = None
        if faiss is not None:
            index = faiss.IndexFlatIP(features.shape[1])
            index.add(np.ascontiguousarray(features))
            similarities, indices = index.search(np.ascontiguousarray(features), k)
            return indices, similarities, "faiss"
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(features)
    distances, indices = search.kneighbors(features)
    return indices, 1.0 - distances, "scikit-learn"


def nearest_neighbours(features: np.ndarray, k: int) -> Neighbours:
    """The `k` nearest other images of each image (L2-normalised `features`), itself left out.

    An exact duplicate can come before the image itself in the search's order, so the image is removed by index
    (or the (k+1)-th neighbour, when it is not among them).
    """
    k = min(k, len(features) - 1)
    indices, similarities, backend = _search(features, k + 1)
    rows = np.arange(len(features))[:, None]
    is_self = indices == rows
    # Drop the image itself where it was found, else the last (least similar) of the k + 1.
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(indices, dtype=bool)
    keep[np.arange(len(features)), drop] = False
    return Neighbours(indices[keep].reshape(len(features), k), similarities[keep].reshape(len(features), k)
                      .astype(np.float32), backend)
