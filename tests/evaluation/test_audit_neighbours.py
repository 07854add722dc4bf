"""The audit's neighbour search: the image itself left out even behind an exact copy, faiss and scikit-learn agree,
and the neighbour graph is the one cleanlab's Datalab takes."""

from __future__ import annotations

import numpy as np
import pytest

from vit_pipeline.evaluation.audit import neighbours
from vit_pipeline.evaluation.audit.embed import centre_and_normalise


def embeddings() -> np.ndarray:
    from sklearn.datasets import load_digits

    features = load_digits().data[:300].astype(np.float32)
    features[1] = features[0]  # an exact copy: it may come before the image itself in the search's order
    return centre_and_normalise(features)


def test_neighbours_leave_the_image_out_and_match_across_backends(monkeypatch):
    features = embeddings()
    found = neighbours.nearest_neighbours(features, 5)
    assert found.backend == "scikit-learn" and found.indices.shape == (300, 5)
    assert not (found.indices == np.arange(300)[:, None]).any()
    assert found.indices[0, 0] == 1 and found.indices[1, 0] == 0
    assert found.similarities[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert (np.diff(found.similarities, axis=1) <= 1e-6).all()
    pytest.importorskip("faiss")
    monkeypatch.setattr(neighbours, "FAISS_ABOVE", 0)
    by_faiss = neighbours.nearest_neighbours(features, 5)
    assert by_faiss.backend == "faiss"
    np.testing.assert_allclose(by_faiss.similarities, found.similarities, atol=1e-4)
    graph = by_faiss.knn_graph()
    assert graph.shape == (300, 300) and graph.nnz == 1500
    np.testing.assert_allclose(graph[2].data, np.clip(1 - by_faiss.similarities[2], 0, None), atol=1e-6)
