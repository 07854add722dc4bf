"""Fingerprints of the passes mapped over a dataset (the image check, the skew pass, the pixel cache), so that a
result cached by another version of the package is never read back.

`Dataset.map` finds a cached result by its input's fingerprint and a hash of the mapped function; the helpers that
function calls are not part of that hash. After an upgrade that changed them (the image check gained a `digest`
column), `map` returned the old columns from `~/.cache/huggingface/datasets` and the quickstart stopped with
"Column 'digest' doesn't exist". The fingerprint below adds the source of every module of `vit_pipeline.data`.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


@functools.cache
def code_version() -> str:
    """A hash of the source of every module of this folder (`vit_pipeline.data`): what computes the mapped passes."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def pass_fingerprint(dataset, function, **options) -> str:
    """The `new_fingerprint` of `dataset.map(function, **options)`: the input, the function (datasets' own hash of
    it, its state included), the options that shape the output, and this package's data code."""
    from datasets.fingerprint import Hasher

    return Hasher.hash([dataset._fingerprint, Hasher.hash(function), sorted((k, str(v)) for k, v in options.items()),
                        code_version()])
