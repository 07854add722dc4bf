"""The audit's checks, one small class per kind of issue, shaped like cleanlab Datalab's issue managers: each gives
every image a score in [0, 1] (low: likely an issue) and an issue flag, with a summary and details; `CHECKS` lists
them and the report only iterates over their findings.

Label issues and outliers go through cleanlab's Datalab, image issues through cleanvision's Imagelab; duplicates
are the pixel digests (exact) and the embedding neighbours (near).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vit_pipeline.config.commands import IMAGE_ISSUES
from vit_pipeline.evaluation.audit.neighbours import Neighbours

logger = logging.getLogger(__name__)


@dataclass
class AuditData:
    """Every image of every split, in one order: where it comes from, its label, embedding and neighbours."""

    splits: np.ndarray  # the split of each image ("train", "eval", ...), train first
    rows: np.ndarray  # its row in that split
    ids: list[str]  # what exclude.txt names it by: its file path, or `split:row` of the source data
    id_kind: str  # "path" or "row": which of the two `ids` are
    labels: np.ndarray  # ClassLabel ids
    label_names: list[str]
    features: np.ndarray  # L2-normalised embeddings [n, d]
    neighbours: Neighbours
    digests: dict[str, list[str]]  # pixel digests per split (the image check's)
    images: Any  # a datasets.Dataset of the `image` column of every split, in this order
    confirm: Any = None  # (split, row) -> full-scale digest, for JPEG draft digests (`duplicates.confirm_in`)

    def __post_init__(self):
        # Splits come one after the other: a split's row `r` is at its first position plus `r`.
        names, first = np.unique(self.splits, return_index=True)
        self._starts = dict(zip(names.tolist(), first.tolist(), strict=True))

    def index(self, split: str, row: int) -> int:
        """The position of `split`'s row `row` in this order."""
        return self._starts[split] + int(row)


@dataclass
class Finding:
    """One kind of issue over every image: scores in [0, 1] (low: likely), flags, a summary and details."""

    name: str
    scores: np.ndarray
    is_issue: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Check:
    """A kind of issue. `run` returns one `Finding` per kind it finds (image issues find several)."""

    name = ""

    def __init__(self, **settings):
        self.settings = settings

    def run(self, data: AuditData) -> list[Finding]:
        raise NotImplementedError


def knn_pred_probs(data: AuditData, smoothing: float = 0.01) -> np.ndarray:
    """Out-of-sample predicted probabilities from the neighbours' labels (cleanlab's kNN route, on the neighbours
    already found): each image's class distribution among its k nearest other images, weighted by similarity."""
    num_classes = len(data.label_names)
    weights = np.clip(data.neighbours.similarities, 1e-6, None)
    votes = np.zeros((len(data.labels), num_classes), dtype=np.float32)
    np.add.at(votes, (np.arange(len(data.labels))[:, None], data.labels[data.neighbours.indices]), weights)
    votes += smoothing * weights.sum(axis=1, keepdims=True) / num_classes
    return votes / votes.sum(axis=1, keepdims=True)


def cross_validated_pred_probs(data: AuditData, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-sample predicted probabilities from a logistic regression on the embeddings, cross-validated."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = max(2, min(folds, int(np.bincount(data.labels).max())))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    classifier = LogisticRegression(max_iter=500, C=10.0)
    return cross_val_predict(classifier, data.features, data.labels, cv=split, method="predict_proba")


class LabelIssues(Check):
    """Images whose given label the other images disagree with: out-of-sample predicted probabilities into
    cleanlab's label-issue search (Datalab `label`); the suggested label is the most probable one."""

    name = "label"

    def run(self, data: AuditData) -> list[Finding]:
        from cleanlab import Datalab

        method = self.settings.get("method", "knn")
        pred_probs = (knn_pred_probs(data) if method == "knn"
                      else cross_validated_pred_probs(data, seed=self.settings.get("seed", 0)))
        lab = Datalab(data={"label": data.labels}, label_name="label", verbosity=0)
        lab.find_issues(pred_probs=pred_probs, issue_types={"label": {}})
        issues = lab.get_issues("label")
        suggested = pred_probs.argmax(axis=1)
        return [Finding(self.name, issues["label_score"].to_numpy(), issues["is_label_issue"].to_numpy(),
                        {"method": method}, {"suggested": suggested, "pred_probs": pred_probs})]


class ExactDuplicates(Check):
    """Images with the same decoded pixels (the pixel digests the image check took), within and across splits."""

    name = "exact_duplicate"

    def run(self, data: AuditData) -> list[Finding]:
        from vit_pipeline.data.duplicates import find_exact_duplicates

        found = find_exact_duplicates(data.digests, data.confirm)
        groups = [sorted(data.index(split, row) for split, row in group) for group in found.groups]
        flagged = np.zeros(len(data.labels), dtype=bool)
        for group in groups:
            flagged[group] = True
        return [Finding(self.name, np.where(flagged, 0.0, 1.0), flagged, {"groups": len(groups)}, {"groups": groups})]


# Near duplicates by default (cleanlab's Datalab rule): a cosine distance under this share of the median distance of
# every image to its nearest neighbour.
NEAR_DUPLICATE_SHARE = 0.13


def near_duplicate_similarity(neighbours: Neighbours, similarity: float | None) -> float:
    """The similarity from which two images are near duplicates: `similarity` when set, else 1 minus
    `NEAR_DUPLICATE_SHARE` of the median nearest-neighbour cosine distance (cleanlab's rule, which follows how
    spread the embedding is)."""
    if similarity is not None:
        return similarity
    median = max(float(np.median(1.0 - neighbours.similarities[:, 0])), 1e-6)
    return 1.0 - NEAR_DUPLICATE_SHARE * median


class NearDuplicates(Check):
    """Images whose embeddings have a cosine similarity of at least `similarity` (and other pixels): re-encoded,
    resized or lightly edited copies. Pairs are joined into groups (union-find)."""

    name = "near_duplicate"

    def run(self, data: AuditData) -> list[Finding]:
        threshold = near_duplicate_similarity(data.neighbours, self.settings.get("similarity"))
        digest = np.concatenate([np.asarray(data.digests[s], dtype=object) for s in dict.fromkeys(data.splits)])
        parent = np.arange(len(data.labels))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        pairs = np.argwhere(data.neighbours.similarities >= threshold)
        for i, slot in pairs:
            j = int(data.neighbours.indices[i, slot])
            if digest[i] != digest[j] or not digest[i]:
                parent[root(int(i))] = root(j)
        roots = np.array([root(i) for i in range(len(parent))])
        flagged = np.bincount(roots, minlength=len(parent))[roots] > 1
        # Members of a group, in image order: a stable sort by root, split where the root changes.
        order = np.argsort(roots, kind="stable")
        groups = [g.tolist() for g in np.split(order, np.flatnonzero(np.diff(roots[order])) + 1) if len(g) > 1]
        scores = np.clip(1.0 - data.neighbours.similarities[:, 0], 0.0, 1.0)
        return [Finding(self.name, np.where(flagged, scores, 1.0), flagged,
                        {"groups": len(groups), "similarity": round(threshold, 6)}, {"groups": groups})]


class Outliers(Check):
    """Images far from every other image in embedding space (Datalab `outlier` on the neighbour graph)."""

    name = "outlier"

    def run(self, data: AuditData) -> list[Finding]:
        from cleanlab import Datalab

        lab = Datalab(data={"label": data.labels}, label_name="label", verbosity=0)
        lab.find_issues(knn_graph=data.neighbours.knn_graph(), issue_types={"outlier": {}})
        issues = lab.get_issues("outlier")
        return [Finding(self.name, issues["outlier_score"].to_numpy(), issues["is_outlier_issue"].to_numpy())]


# From this many images on, cleanvision's image checks run in a pool of worker processes (one per core).
IMAGE_PROCESSES_ABOVE = 5000


# An image issue that cleanvision finds in more than this share of the images describes the data set, not images.
MOST_IMAGES = 0.5


class ImageIssues(Check):
    """Dark, light, blurry, low-information (blank), odd-size and odd-aspect images through cleanvision's Imagelab;
    a kind found in most images (grayscale in a grayscale set) is what the data looks like, and flags nothing."""

    name = "image"

    def run(self, data: AuditData) -> list[Finding]:
        from cleanvision import Imagelab

        if not self.settings.get("enabled", True):
            none = np.zeros(len(data.labels), dtype=bool)
            return [Finding(kind, np.ones(len(none)), none, {"skipped": True}) for kind in IMAGE_ISSUES]
        lab = Imagelab(hf_dataset=data.images, image_key="image", verbose=False)
        # cleanvision's worker pool costs seconds to start: small sets are faster in-process (680 digits: 2.1 s
        # in-process, 7.7 s with the pool on 2 busy cores).
        n_jobs = 1 if len(data.labels) <= IMAGE_PROCESSES_ABOVE else None
        lab.find_issues({kind: {} for kind in IMAGE_ISSUES}, n_jobs=n_jobs, verbose=False)
        findings = []
        for kind in IMAGE_ISSUES:
            flags = lab.issues[f"is_{kind}_issue"].to_numpy(dtype=bool)
            summary = {"flagged_by_cleanvision": int(flags.sum())}
            if flags.mean() > MOST_IMAGES:
                # What most images are is what this data looks like (grayscale digits, 8 x 8 glyphs with little
                # information): nothing stands out, so nothing is flagged; the report says so.
                flags, summary["most_images"] = np.zeros_like(flags), True
            findings.append(Finding(kind, lab.issues[f"{kind}_score"].to_numpy(dtype=float), flags, summary))
        return findings


# The checks the audit runs, in report order.
CHECKS = (LabelIssues, ExactDuplicates, NearDuplicates, Outliers, ImageIssues)


def run_checks(data: AuditData, settings: dict[str, dict]) -> tuple[dict[str, Finding], dict[str, float]]:
    """Run every check of `CHECKS` with its settings; returns the findings by name and each check's seconds."""
    findings, seconds = {}, {}
    for check in CHECKS:
        started = time.perf_counter()
        for finding in check(**settings.get(check.name, {})).run(data):
            findings[finding.name] = finding
        seconds[check.name] = time.perf_counter() - started
        logger.info("Audit check %s: %.2f s", check.name, seconds[check.name])
    return findings, seconds
