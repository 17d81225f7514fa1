"""Which backend the shallow features' kernels run on: numba where it imports, else numpy.

numba is an optional dependency. Where ``import numba`` succeeds, the LBP kernels of
:mod:`pipeline.features._lbp_kernel` are compiled (``njit(nogil=True, cache=True)``: the
compiled code releases the GIL, so the threads of ``extract()`` run them in parallel, and is
cached next to the module on disk); elsewhere the vectorised numpy path runs. Both give the
same bytes (``tests/test_lbp.py``), so the choice never changes a stored feature.

The environment variable ``INVERT_KERNELS`` overrides the choice: ``numpy`` forces the numpy
path (benchmarks, and a check that the fallback still works where numba is installed);
``numba`` insists on numba and fails where it is missing; unset or ``auto`` picks numba when
it imports. It is read on every call, so a test can set it with ``monkeypatch.setenv``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from pipeline.errors import ConfigError

__all__ = ["backend", "kernel", "numba_available"]

try:  # optional dependency: the numpy path runs without it
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

_F = TypeVar("_F", bound=Callable[..., Any])

#: Values ``INVERT_KERNELS`` may take.
_CHOICES = ("auto", "numba", "numpy")


def numba_available() -> bool:
    """Whether ``import numba`` succeeded."""
    return numba is not None


def backend() -> str:
    """``"numba"`` or ``"numpy"``: where the LBP kernels run on this call.

    Returns
    -------
    str
        ``"numba"`` when numba imports and ``INVERT_KERNELS`` is unset, ``auto`` or
        ``numba``; ``"numpy"`` when numba is missing or ``INVERT_KERNELS=numpy``.

    Raises
    ------
    ConfigError
        ``INVERT_KERNELS`` holds another value, or asks for numba where it is not installed.
    """
    choice = os.environ.get("INVERT_KERNELS", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ConfigError(
            f"INVERT_KERNELS must be one of {', '.join(_CHOICES)}, got {choice!r}; unset it to "
            "use numba where it is installed"
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


def kernel(fn: _F) -> _F:
    """``numba.njit(nogil=True, cache=True, error_model="numpy")(fn)``, or ``fn`` unchanged without numba.

    Without numba the plain Python function is never called by the library (:func:`backend`
    says ``"numpy"``); keeping it importable lets the kernel modules import everywhere.
    Compilation happens on the first call with each argument type, not at import.
    """
    if numba is None:  # pragma: no cover - depends on the environment
        return fn
    jitted: _F = numba.njit(nogil=True, cache=True, error_model="numpy")(fn)
    return jitted
