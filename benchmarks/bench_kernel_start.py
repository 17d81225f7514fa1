"""Start-up cost of the numba kernels: a new process's first ``lbp()`` / ``hog()`` call.

Run from the repository root::

    python benchmarks/bench_kernel_start.py [--repeats 3]

Each row is a new Python process that imports the extractor and calls it once on one
256×256 RGB image, timed inside the process (import, then first call). Three settings:
``INVERT_KERNELS=numpy`` (no compilation); numba with an empty on-disk cache (``NUMBA_CACHE_DIR``
pointing at a new folder: every kernel compiles); numba with that cache filled by the run
before (the kernels load from disk). Best of ``--repeats`` processes each. The kernels
compile once per argument types (uint8 RGB, float grey, ...); this times the uint8 RGB call
that ``invert extract`` makes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: What each child process runs: import, then one call, both timed.
_CHILD = """
import json, sys, time
import numpy as np
start = time.perf_counter()
from pipeline.features import {name} as module
imported = time.perf_counter()
module.{name}(np.zeros((1, 256, 256, 3), np.uint8) + np.arange(256, dtype=np.uint8)[:, None])
done = time.perf_counter()
print(json.dumps({{"import": imported - start, "first_call": done - imported}}))
"""


def child(name: str, env: dict[str, str]) -> dict[str, float]:
    """Run one child process; its import and first-call seconds."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(name=name)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name in ("lbp", "hog"):
        rows: dict[str, list[dict[str, float]]] = {
            "numpy": [],
            "numba, cold": [],
            "numba, cached": [],
        }
        for _ in range(args.repeats):
            rows["numpy"].append(child(name, {"INVERT_KERNELS": "numpy"}))
            with tempfile.TemporaryDirectory() as cache:
                env = {"INVERT_KERNELS": "numba", "NUMBA_CACHE_DIR": cache}
                rows["numba, cold"].append(child(name, env))  # compiles, writes the cache
                rows["numba, cached"].append(child(name, env))  # loads it
        for setting, runs in rows.items():
            imported = min(r["import"] for r in runs)
            first = min(r["first_call"] for r in runs)
            print(
                f"{name} {setting:14s}: import {imported:6.2f} s, first call {first:6.2f} s "
                f"(best of {len(runs)} processes)"
            )


if __name__ == "__main__":
    main()
