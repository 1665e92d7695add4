"""Re-execute notebooks in fresh kernels and write their outputs (the maintainers' command).

    python3 tools/course.py regen                 # every notebook in notebooks/ and solutions/
    python3 tools/course.py regen notebooks/03*   # just these

Each notebook runs top to bottom in a fresh kernel started in the notebook's folder, with
progress bars off and the check mode of its folder, exactly as the tests run it. Outputs are
written with sequential execution counts, without timing metadata, and with a hash of the
code cells and one of rlmemlib's sources, so a test can tell when either changed but the
outputs were not regenerated.
Cells tagged ``raises-exception`` may raise; any other error stops with the cell's traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import CHECK_MODE, HASH_KEY, code_hash, normalize_metadata, package_hash  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def execute(path: Path) -> tuple[str, float]:
    """Run one notebook in a fresh kernel and write it back; returns (path, seconds)."""
    nb = nbformat.read(path, as_version=4)
    package = package_hash()  # the rlmemlib this run executes with
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    os.environ["RLMEMLIB_PROGRESS"] = "0"
    os.environ["PYTHONHASHSEED"] = "0"
    os.environ["RLMEMLIB_CHECK_MODE"] = CHECK_MODE.get(path.parent.name, "")
    start = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    normalize_metadata(nb)
    nb.metadata[HASH_KEY] = {"code_hash": code_hash(nb), "package_hash": package}
    nbformat.write(nb, path)
    return str(path.relative_to(ROOT)), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks to run (default: all)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="notebooks run at once")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.paths] or sorted(
        [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])
    solutions = [p for p in paths if p.parent.name == "solutions"]
    if solutions:  # exercises are made from solutions first (no kernel needed)
        from make_exercises import generate
        generate(paths=solutions)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for name, seconds in pool.map(execute, paths):
            print(f"{name}: {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
