"""Notebook helpers shared by the regenerator and the tests: one definition of "up to date"."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HASH_KEY = "rlmemlib"  # notebook metadata key where the regenerator records what it executed
PACKAGE = Path(__file__).resolve().parent.parent / "rlmemlib"

# What each folder's kernels see: the check mode of rlmemlib.checks.
CHECK_MODE = {"notebooks": "", "solutions": "solution", "exercises": "stub"}


def code_hash(nb) -> str:
    """A hash of what decides a notebook's outputs: its code cells' sources and tags."""
    parts = [(_source(c), sorted(c.get("metadata", {}).get("tags", [])))
             for c in nb["cells"] if c["cell_type"] == "code"]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:16]


def package_hash(package: Path = PACKAGE) -> str:
    """A hash of rlmemlib's sources: a lesson's numbers and figures come from them as well.

    Every ``.py`` file under the package, by relative path and content (line endings
    normalised), so a change anywhere in rlmemlib (a plotting style, a check's message, a
    memory's layout) marks every executed notebook as stale until it is regenerated.
    """
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()[:16]


def _source(cell) -> str:
    """A cell's source as one string (files store it as a list of lines)."""
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def normalize_metadata(nb) -> None:
    """Drop what changes from machine to machine (timings, Python patch version)."""
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        cell.get("metadata", {}).pop("collapsed", None)
    nb["metadata"]["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                    "name": "python3"}
    nb["metadata"]["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    nb["metadata"].pop("widgets", None)
