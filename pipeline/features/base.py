"""What an extractor is, and the image conventions every shallow feature shares (docs/method.md §1).

An extractor maps a batch of images ``(N, H, W, 3) uint8`` RGB to a batch of feature arrays
``(N, *shape) float32``. It is described by an :class:`Extractor` record: its name, a version
number bumped whenever its output changes (stores made by another version are refused), the
frozen dataclass of its parameters, and the names of its per-sample dimensions.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from pipeline.errors import ConfigError, ExtractionError

__all__ = [
    "MATLAB_GREY_WEIGHTS",
    "Extractor",
    "OnDevice",
    "as_float_images",
    "compiled",
    "kernel_backend",
    "numba_available",
    "to_grey",
]

#: MATLAB ``rgb2gray`` weights (R, G, B), the grey conversion of the paper's VLFeat pipeline.
MATLAB_GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)


@dataclass(frozen=True)
class OnDevice:
    """An extractor run on the training device, inside the training graph.

    Attributes
    ----------
    encode : callable
        ``encode(x)`` with ``x`` a ``(B, 3, H, W)`` uint8 Tensor of images on the device,
        returning the ``(B, *shape)`` float features on that device.
    network : torch.nn.Module or None
        The network behind ``encode`` (AlexNet layers), so a caller can freeze it, train it
        (the autoencoders) or load trained weights into it; ``None`` for a fixed function.
    """

    encode: Callable[[Any], Any]
    network: Any = None


@dataclass(frozen=True)
class Extractor:
    """A registered feature extractor.

    Attributes
    ----------
    name : str
        Registry name (``"hog"``, ``"lbp"``, ``"sift"``, ``"conv5"``, ...).
    version : int
        Bumped whenever the numbers the extractor produces change; part of every store's
        provenance, so a cache made by older code is refused rather than mixed.
    params_type : type
        Frozen dataclass of the extractor's parameters; its defaults are the paper's.
    compute : callable
        ``compute(images, params) -> features`` with images ``(N, H, W, 3) uint8`` and
        features ``(N, *output_shape(params, H, W)) float32``.
    output_shape : callable
        ``output_shape(params, H, W) -> tuple`` — the per-sample feature shape.
    dims : tuple of str
        Names of the per-sample dimensions, e.g. ``("channel", "y", "x")``.
    description : str
        One line for ``--help`` and the store's attrs.
    family : str or None
        Extractors computed together in one pass (``"alexnet"`` for conv1 ... fc8) share
        one ``params.yaml`` section named after the family and a ``compute_many``.
    compute_many : callable or None
        ``compute_many(images, params, names, device) -> {name: features}``: several family
        members from one pass on ``device`` (``"cpu"``, ``"cuda"``).
    store_dtype : callable
        ``store_dtype(params) -> str``: the dtype of the stored features.
    describe : callable
        ``describe(params) -> dict``: provenance beyond the parameters (e.g. the sha256 of a
        weights file, whether the weights are random).
    codec : {"raw", "lz4", "lz4-shuffle", "zstd", "zstd-fast"}
        Store compression (:class:`pipeline.store.ArraySpec`). ``raw`` (the default) for
        dense float features: lz4 + bit shuffle only packs HOG to 84% and LBP to 83% of
        their size, and a raw chunk is read as a view of the mapped file (the training
        loader's speed); lz4 for mostly-empty maps (SIFT); zstd + byte shuffle packs sparse
        ReLU activations to ~30% of float32, lz4 + byte shuffle to ~35% at a third of the
        encoding time (the large CONV1–CONV4 maps).
    on_device : callable or None
        ``on_device(params, device, pretrained=True) -> OnDevice``: the extractor as a torch
        function on ``device`` (online features in training and evaluation, the encoder of
        an autoencoder); ``pretrained=False`` builds a network without reading its weights
        (trained weights are loaded into it next). ``None``: not available on a device.
    """

    name: str
    version: int
    params_type: type[Any]
    compute: Callable[[np.ndarray, Any], np.ndarray]
    output_shape: Callable[[Any, int, int], tuple[int, ...]]
    dims: tuple[str, ...]
    description: str
    family: str | None = None
    compute_many: Callable[[np.ndarray, Any, Sequence[str], str], dict[str, np.ndarray]] | None = (
        None
    )
    store_dtype: Callable[[Any], str] = field(default=lambda params: "float32")
    describe: Callable[[Any], dict[str, Any]] = field(default=lambda params: {})
    codec: Literal["lz4", "lz4-shuffle", "zstd", "zstd-fast", "raw"] = "raw"
    on_device: Callable[..., OnDevice] | None = None

    @property
    def section(self) -> str:
        """The ``extract`` subsection holding this extractor's parameters."""
        return self.family or self.name


def as_float_images(images: np.ndarray) -> np.ndarray:
    """Images as float32 in [0, 1] with a channel axis (MATLAB ``im2single``).

    Parameters
    ----------
    images : (N, H, W) or (N, H, W, C) ndarray, uint8 or floating
        uint8 is divided by 255; floating input is taken to be in [0, 1] already.

    Returns
    -------
    (N, H, W, C) ndarray of float32
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ExtractionError(
            f"expected a batch of images (N, H, W) or (N, H, W, C), got shape {images.shape}; "
            "add a leading batch axis for a single image (image[None])"
        )
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(images.dtype, np.floating):
        return images.astype(np.float32, copy=False)
    raise ExtractionError(
        f"expected uint8 or floating images, got dtype {images.dtype}; convert to uint8 (0-255) "
        "or float32 in [0, 1]"
    )


def to_grey(images: np.ndarray) -> np.ndarray:
    """Grey images with MATLAB ``rgb2gray`` weights, float32 in [0, 1].

    Parameters
    ----------
    images : (N, H, W, 3) or (N, H, W, 1) or (N, H, W) ndarray

    Returns
    -------
    (N, H, W) ndarray of float32
    """
    x = as_float_images(images)
    if x.shape[-1] == 1:
        return np.ascontiguousarray(x[..., 0])
    if x.shape[-1] != 3:
        raise ExtractionError(f"expected 1 or 3 colour channels, got {x.shape[-1]}")
    r, g, b = MATLAB_GREY_WEIGHTS
    return (
        np.float32(r) * x[..., 0] + np.float32(g) * x[..., 1] + np.float32(b) * x[..., 2]
    ).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Compiled kernels: numba where it imports, else the numpy paths
# --------------------------------------------------------------------------------------------

_F = TypeVar("_F", bound=Callable[..., Any])

#: Values the environment variable ``INVERT_KERNELS`` may take (:func:`kernel_backend`).
KERNEL_CHOICES = ("auto", "numba", "numpy")


@functools.lru_cache(maxsize=1)
def _import_numba() -> Any:
    """The ``numba`` module, or None where it is not installed (imported once, on first use)."""
    try:
        import numba
    except ImportError:
        return None
    return numba


def numba_available() -> bool:
    """Whether ``import numba`` succeeds (numba is an optional dependency)."""
    return _import_numba() is not None


def kernel_backend() -> str:
    """``"numba"`` or ``"numpy"``: where a shallow feature's kernels run on this call.

    numba is optional. Where it imports, features with compiled kernels (LBP:
    ``pipeline/features/lbp/_kernel.py``) run them; elsewhere their vectorised numpy paths
    run. Both give the same bytes (``tests/test_lbp_backends.py``), so the choice never
    changes a stored feature. The environment variable ``INVERT_KERNELS`` overrides it:
    ``numpy`` forces the numpy paths (benchmarks; a check of the fallback where numba is
    installed), ``numba`` insists on numba, unset or ``auto`` picks numba when it imports.
    It is read on every call.

    Returns
    -------
    str

    Raises
    ------
    ConfigError
        ``INVERT_KERNELS`` holds another value, or asks for numba where it is not installed.
    """
    choice = os.environ.get("INVERT_KERNELS", "auto").strip().lower() or "auto"
    if choice not in KERNEL_CHOICES:
        raise ConfigError(
            f"INVERT_KERNELS must be one of {', '.join(KERNEL_CHOICES)}, got {choice!r}; unset "
            "it to use numba where it is installed"
        )
    if choice == "numpy":
        return "numpy"
    if not numba_available():
        if choice == "numba":
            raise ConfigError(
                "INVERT_KERNELS=numba but numba is not installed; pip install numba, or unset "
                "INVERT_KERNELS to use the numpy path"
            )
        return "numpy"
    return "numba"


def compiled(fn: _F) -> _F:
    """``fn`` compiled by numba, or ``fn`` unchanged without numba (a decorator).

    Compiled with ``numba.njit(nogil=True, cache=True, error_model="numpy")``: the GIL is
    released (the threads of ``extract()`` run kernels in parallel), the machine code is
    cached on disk beside the module, and float division by zero gives inf/nan as in numpy
    instead of raising (the kernels never divide by zero; the check would cost a branch per
    division). No ``fastmath``, no ``parallel``: the float operations, and their order, are
    the ones written, and nothing depends on thread scheduling. Compilation happens on the
    first call with each argument type, not at import.

    Without numba the plain Python function is kept so that the kernel modules import
    everywhere; the library never calls it (:func:`kernel_backend` says ``"numpy"``).
    """
    numba = _import_numba()
    if numba is None:
        return fn
    jitted: _F = numba.njit(nogil=True, cache=True, error_model="numpy")(fn)
    return jitted
