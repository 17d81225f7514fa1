"""Inverting visual representations (Dosovitskiy & Brox, CVPR 2016) as an offline pipeline.

The public surface is small:

- :mod:`pipeline.images` — image sources and the image store (``invert prepare``);
- :mod:`pipeline.store` — chunked, checksummed, resumable Zarr v3 stores with provenance;
- :mod:`pipeline.features` — the extractor registry and ``extract(name, images, **params)``;
- :mod:`pipeline.runner` — the Dask runner that fills a feature store (``invert extract``);
- :mod:`pipeline.config` — ``params.yaml`` sections parsed into frozen dataclasses;
- :mod:`pipeline.errors` — the one error hierarchy of the library.
"""

from __future__ import annotations

import os

# Same inputs, same bytes: MKL (torch's CPU BLAS) may otherwise pick another code path when
# an array's alignment differs from run to run, and fewer threads when the machine is busy,
# either of which changes the last bits of a matrix product. Set before torch is imported
# (every entry point imports this package first); a user's own setting wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

__version__ = "0.1.0"

__all__ = ["__version__"]
