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

__version__ = "0.1.0"

__all__ = ["__version__"]
