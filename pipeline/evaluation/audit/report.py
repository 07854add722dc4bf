"""What the audit writes (these names are the interface): audit_report.json / .md, issues.csv, exclude.txt and the
image grids label_issues.png, duplicates.png, leakage.png. Everything is read from the checks' findings."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from vit_pipeline.config.commands import IMAGE_ISSUES
from vit_pipeline.evaluation.audit.checks import AuditData, Finding
from vit_pipeline.evaluation.plots import pyplot, save_figure

# Images (or duplicate groups) per grid figure, most likely first.
GRID_ITEMS = 16


def _where(data: AuditData, i: int) -> dict[str, Any]:
    return {"split": str(data.splits[i]), data.id_kind: data.ids[i]}


def _flagged(data: AuditData, finding: Finding) -> list[dict[str, Any]]:
    """The flagged images of a finding, most likely first: split, path or row, score."""
    order = np.flatnonzero(finding.is_issue)
    order = order[np.argsort(finding.scores[order], kind="stable")]
    return [{**_where(data, int(i)), "score": round(float(finding.scores[i]), 4)} for i in order]


def leakage(data: AuditData, findings: dict[str, Finding]) -> dict[str, Any]:
    """Every eval or test image with a duplicate (exact or near) in train: {split: [index, ...]} and the kind."""
    leaked: dict[int, str] = {}
    for kind in ("exact_duplicate", "near_duplicate"):
        for group in findings[kind].details["groups"]:
            if any(data.splits[i] == "train" for i in group):
                for i in group:
                    if data.splits[i] != "train":
                        leaked.setdefault(i, kind.split("_")[0])
    return leaked


def accuracy_with_and_without(data: AuditData, logits: np.ndarray | None, leaked: dict[int, str]) -> dict | None:
    """The model's accuracy on the eval split with and without its leaked images (None: the model's labels are
    not the data's, so its head says nothing about them)."""
    if logits is None:
        return None
    evals = np.flatnonzero(data.splits == "eval")
    correct = logits[evals].argmax(axis=1) == data.labels[evals]
    clean = np.array([i not in leaked for i in evals], dtype=bool)
    return {"accuracy": round(float(correct.mean()), 4), "num_images": int(len(evals)),
            "accuracy_without_leaked": round(float(correct[clean].mean()), 4) if clean.any() else None,
            "num_images_without_leaked": int(clean.sum())}


def build_report(data: AuditData, findings: dict[str, Finding], *, balance: dict, starved: list[str],
                 accuracy: dict | None, settings: dict, timing: dict) -> dict[str, Any]:
    """The audit report (audit_report.json) from the findings."""
    names = data.label_names
    label = findings["label"]
    suggested = label.details["suggested"]
    label_issues = [{**row, "given_label": names[data.labels[i]], "suggested_label": names[suggested[i]]}
                    for i, row in zip(_order(label), _flagged(data, label), strict=True)]
    duplicates = [{"kind": kind.split("_")[0], "members": [_where(data, i) for i in group]}
                  for kind in ("exact_duplicate", "near_duplicate") for group in findings[kind].details["groups"]]
    leaked = leakage(data, findings)
    by_split: dict[str, dict[str, Any]] = {}
    for i, kind in sorted(leaked.items()):
        entry = by_split.setdefault(str(data.splits[i]), {"exact": 0, "near": 0, "images": []})
        entry[kind] += 1
        entry["images"].append(data.ids[i])
    return {
        "num_images": {str(s): int((data.splits == s).sum()) for s in dict.fromkeys(data.splits)},
        "id": data.id_kind,
        "label_issues": label_issues,
        "duplicates": duplicates,
        "leakage": {"splits": by_split, "model_accuracy": accuracy},
        "outliers": _flagged(data, findings["outlier"]),
        "image_issues": {kind: _flagged(data, findings[kind]) for kind in IMAGE_ISSUES},
        "image_issues_of_most_images": {kind: findings[kind].summary["flagged_by_cleanvision"] for kind in IMAGE_ISSUES
                                        if findings[kind].summary.get("most_images")},
        "class_balance": {**balance, "starved": starved},
        "settings": settings,
        "timing_seconds": timing,
    }


def _order(finding: Finding) -> np.ndarray:
    order = np.flatnonzero(finding.is_issue)
    return order[np.argsort(finding.scores[order], kind="stable")]


def excluded_ids(data: AuditData, findings: dict[str, Finding], issues: tuple[str, ...]) -> list[str]:
    """The images exclude.txt lists: those flagged by `issues`, but one member of each duplicate group is kept
    (the first: a train image when the group has one, so a leaked eval copy is what goes)."""
    drop: set[int] = set()
    for name in issues:
        finding = findings[name]
        if "groups" in finding.details:
            for group in finding.details["groups"]:
                drop.update(group[1:])
        else:
            drop.update(np.flatnonzero(finding.is_issue).tolist())
    return [data.ids[i] for i in sorted(drop)]


def issue_rows(data: AuditData, findings: dict[str, Finding]) -> list[dict[str, Any]]:
    """issues.csv: one row per flagged image and issue (split, path or row, issue, score, given and suggested label)."""
    names, suggested = data.label_names, findings["label"].details["suggested"]
    rows = []
    for name, finding in findings.items():
        for i in _order(finding):
            rows.append({**_where(data, int(i)), "issue": name,
                         "score": round(float(finding.scores[i]), 4), "given_label": names[data.labels[i]],
                         "suggested_label": names[suggested[i]] if name == "label" else ""})
    return rows


# Side of each image in the grids, in pixels (small images are scaled up with nearest neighbours, so pixels show).
CELL = 96
CAPTION = 30


def _grid(items: list[tuple[list[Any], str]], path: Path, title: str) -> Path:
    """A grid of items (each: images side by side, a caption above), drawn as one mosaic: one image and a text per
    item, not one axes per image (a figure of 16 pairs then takes a fraction of a second)."""
    from PIL import Image

    plt = pyplot()
    items = items[:GRID_ITEMS]
    width = max([len(images) for images, _ in items] + [1])
    columns = 4 if width == 1 else 2
    rows = max(1, -(-len(items) // columns))
    cell_w, cell_h = width * CELL + 8, CELL + CAPTION
    mosaic = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    for n, (images, _) in enumerate(items):
        r, c = divmod(n, columns)
        for m, image in enumerate(images):
            thumb = image.convert("RGB")
            thumb.thumbnail((CELL, CELL), Image.NEAREST if max(thumb.size) < CELL else Image.BICUBIC)
            if max(thumb.size) < CELL:
                scale = CELL / max(thumb.size)
                thumb = thumb.resize((max(1, round(thumb.width * scale)), max(1, round(thumb.height * scale))),
                                     Image.NEAREST)
            mosaic.paste(thumb, (c * cell_w + m * CELL, r * cell_h + CAPTION))
    fig, ax = plt.subplots(figsize=(mosaic.width / 80, mosaic.height / 80 + 0.4))
    ax.imshow(np.asarray(mosaic), interpolation="nearest")
    ax.axis("off")
    for n, (_, caption) in enumerate(items):
        r, c = divmod(n, columns)
        ax.text(c * cell_w + 2, r * cell_h + 2, caption, fontsize=7, va="top")
    if not items:
        ax.text(mosaic.width / 2, mosaic.height / 2, "none found", ha="center", va="center")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_findings(data: AuditData, findings: dict[str, Finding], out: Path) -> list[Path]:
    """label_issues.png (given vs suggested label), duplicates.png and leakage.png (copies side by side)."""
    names, label = data.label_names, findings["label"]
    suggested = label.details["suggested"]
    issues = [([data.images[int(i)]["image"]], f"given {names[data.labels[i]]} \u2192 {names[suggested[i]]}\n"
               f"{data.splits[i]} ({label.scores[i]:.2f})") for i in _order(label)]
    groups = [(kind, group) for kind in ("exact_duplicate", "near_duplicate")
              for group in findings[kind].details["groups"]]
    duplicates = [([data.images[i]["image"] for i in group[:2]],
                   f"{kind.split('_')[0]}: {', '.join(str(data.splits[i]) for i in group[:2])}")
                  for kind, group in groups]
    leaked = leakage(data, findings)
    pairs = []
    for _, group in groups:
        train = next((i for i in group if data.splits[i] == "train"), None)
        for i in group:
            if train is not None and i in leaked:
                pairs.append(([data.images[train]["image"], data.images[i]["image"]],
                              f"{leaked[i]}: train | {data.splits[i]}"))
    return [_grid(issues, out / "label_issues.png", "Label issues: given \u2192 suggested label"),
            _grid(duplicates, out / "duplicates.png", "Duplicates (exact: same pixels; near: embedding)"),
            _grid(pairs, out / "leakage.png", "Leakage: eval/test images with a copy in train")]


def _markdown(report: dict[str, Any]) -> str:
    counts = report["num_images"]
    lines = ["# Data audit", "", "Images: " + ", ".join(f"{s} {n}" for s, n in counts.items()), "",
             "| Issue | Images |", "|---|---|", f"| label issues | {len(report['label_issues'])} |",
             f"| duplicate groups (exact) | {sum(d['kind'] == 'exact' for d in report['duplicates'])} |",
             f"| duplicate groups (near) | {sum(d['kind'] == 'near' for d in report['duplicates'])} |",
             f"| outliers | {len(report['outliers'])} |",
             *(f"| {kind} | {len(rows)} |" for kind, rows in report["image_issues"].items()), ""]
    lines += [f"Most images are {kind} ({n} of {sum(counts.values())}): taken as what this data looks like, not "
              "flagged." for kind, n in report["image_issues_of_most_images"].items()]
    lines += ["", "## Leakage", ""]
    leaked = report["leakage"]["splits"]
    lines += [f"- {split}: {v['exact']} exact and {v['near']} near copies of train images" for split, v in
              leaked.items()] or ["No eval or test image has a duplicate in train."]
    accuracy = report["leakage"]["model_accuracy"]
    if accuracy:
        lines += ["", f"Model accuracy on eval: {accuracy['accuracy']:.4f} on {accuracy['num_images']} images; "
                  f"without the leaked ones: {accuracy['accuracy_without_leaked']} on "
                  f"{accuracy['num_images_without_leaked']}."]
    key = report["id"]
    lines += ["", "## Label issues (most likely first)", "", f"| Split | {key} | Given | Suggested | Score |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['split']} | {r[key]} | {r['given_label']} | {r['suggested_label']} | {r['score']:.3f} |"
              for r in report["label_issues"][:50]]
    balance = report["class_balance"]
    lines += ["", "## Class balance", "", "Imbalance ratio (largest / smallest class): " +
              ", ".join(f"{s} {r}" for s, r in balance["imbalance_ratio"].items())]
    lines += [f"Classes with no {split} image: {', '.join(m)}" for split, m in balance["missing"].items() if m]
    if balance["starved"]:
        lines.append(f"Starved classes (under a fifth of the median train class): {', '.join(balance['starved'])}")
    lines += ["", "## Timing", "", *(f"- {k}: {v:.2f} s" for k, v in report["timing_seconds"].items()), "",
              "Figures: label_issues.png, duplicates.png, leakage.png; every flagged image: issues.csv; what "
              "exclude_images drops: exclude.txt.", ""]
    return "\n".join(lines)


def write_audit(data: AuditData, findings: dict[str, Finding], report: dict[str, Any], exclude_issues: tuple[str, ...],
                out: Path) -> None:
    """Write audit_report.json, audit_report.md, issues.csv, exclude.txt and the image grids into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rows, exclude = issue_rows(data, findings), excluded_ids(data, findings, exclude_issues)
    (out / "audit_report.json").write_text(json.dumps(report, indent=2))
    (out / "audit_report.md").write_text(_markdown(report))
    with (out / "issues.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, ["split", report["id"], "issue", "score", "given_label", "suggested_label"])
        writer.writeheader()
        writer.writerows(rows)
    header = ("# Images flagged by `vit-pipeline audit`; `exclude_images: <this file>` in a recipe drops them.\n"
              "# Delete a line to keep that image.\n")
    (out / "exclude.txt").write_text(header + "".join(f"{i}\n" for i in exclude))
    plot_findings(data, findings, out)
