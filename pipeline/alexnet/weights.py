"""Weight files of the AlexNet family: Caffe ``.caffemodel``, NumPy ``.npz``, PyTorch ``.pth``.

Every loader returns the same layout, :data:`Params`: a dict from a layer name to the list of
its parameter blobs, ``[weight, bias]``, in the layout of the file (Caffe's and PyTorch's
layouts agree: convolution weights ``(out, in / groups, kh, kw)``, fully connected weights
``(out, in)``). :func:`find_mismatches` compares such a dict with the layers a module
expects and lists every missing, unexpected or misshaped tensor; :func:`to_state_dict` turns
a matching dict into a state dict for ``module.load_state_dict(..., strict=True)``.

The ``.caffemodel`` reader is a small protobuf wire-format decoder of Caffe's
``NetParameter`` (no protobuf dependency). It reads the blobs of the current ``layer``
field (``LayerParameter``), of the deprecated ``layers`` field (``V1LayerParameter``) and of
the even older ``V0LayerParameter`` nested in a V1 layer.

References
----------
.. [1] Jia et al., "Caffe: Convolutional Architecture for Fast Feature Embedding",
   ACM MM 2014; message definitions in ``src/caffe/proto/caffe.proto`` of BVLC/caffe.
.. [2] Protocol Buffers encoding, https://protobuf.dev/programming-guides/encoding/
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.errors import CaffemodelFormatError, WeightsError

__all__ = [
    "WEIGHT_SUFFIXES",
    "CaffeLayer",
    "ExpectedLayer",
    "Params",
    "expected_layers",
    "file_sha256",
    "find_mismatches",
    "group_state_dict",
    "load_caffemodel",
    "load_npz",
    "load_params",
    "load_torch",
    "mismatch_message",
    "read_caffemodel",
    "to_state_dict",
]

#: Layer name -> parameter blobs ``[weight, bias]`` (numpy arrays or tensors).
Params = dict[str, list[np.ndarray]]

#: File suffixes :func:`load_params` understands, and the loader each one goes to.
WEIGHT_SUFFIXES = (".caffemodel", ".npz", ".pth", ".pt")

# --- protobuf wire format ------------------------------------------------------------------
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5  # wire types; 3 and 4 (groups) do not occur in Caffe

# NetParameter fields
_NET_LAYER = 100  # repeated LayerParameter layer
_NET_LAYERS_V1 = 2  # repeated V1LayerParameter layers (deprecated)

# BlobProto fields
_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH = 1, 2, 3, 4  # legacy 4-D dims
_BLOB_DATA = 5  # repeated float data [packed]
_BLOB_SHAPE = 7  # BlobShape shape
_BLOB_DOUBLE_DATA = 8  # repeated double double_data [packed]
_SHAPE_DIM = 1  # BlobShape: repeated int64 dim [packed]

# V1LayerParameter.type is an enum; the names of the values a classification net uses.
_V1_TYPE_NAMES = {
    1: "Accuracy",
    3: "Concat",
    4: "Convolution",
    5: "Data",
    6: "Dropout",
    8: "Flatten",
    12: "ImageData",
    14: "InnerProduct",
    15: "LRN",
    17: "Pooling",
    18: "ReLU",
    20: "Softmax",
    21: "SoftmaxWithLoss",
    22: "Split",
    24: "WindowData",
    29: "MemoryData",
    39: "Deconvolution",
}


@dataclass(frozen=True)
class _LayerSchema:
    """Field numbers of one of Caffe's three layer messages."""

    name: int
    type: int
    blobs: int
    type_is_enum: bool
    nested_v0: int | None  # V1 layers may wrap a V0 layer in field 1


_LAYER = _LayerSchema(name=1, type=2, blobs=7, type_is_enum=False, nested_v0=None)
_LAYER_V1 = _LayerSchema(name=4, type=5, blobs=6, type_is_enum=True, nested_v0=1)
_LAYER_V0 = _LayerSchema(name=1, type=2, blobs=50, type_is_enum=False, nested_v0=None)


@dataclass(frozen=True)
class CaffeLayer:
    """One layer of a ``.caffemodel``.

    Attributes
    ----------
    name : str
        Layer name (``"conv1"``, ``"fc6"``, ...).
    type : str
        Layer type, e.g. ``"Convolution"``; a V1 enum value without a known name reads
        ``"V1:<number>"``.
    blobs : tuple of ndarray
        Parameter blobs in the file's shape (``shape`` or legacy ``num, channels, height,
        width``), float32 (``data``) or float64 (``double_data``).
    """

    name: str
    type: str
    blobs: tuple[np.ndarray, ...]


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode the base-128 varint at ``pos``; return ``(value, next position)``."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise CaffemodelFormatError(f"truncated varint at byte {pos}")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CaffemodelFormatError(f"varint longer than 10 bytes at byte {pos}")


def _as_int64(value: int) -> int:
    """Reinterpret an unsigned 64-bit varint as a two's-complement int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _next_field(data: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """Read one field starting at ``pos``.

    Returns
    -------
    field, wire_type, value, next_pos
        ``value`` is the integer for a varint, otherwise the offset where the payload starts
        (the payload ends at ``next_pos``).
    """
    key, pos = _read_varint(data, pos, end)
    field, wire_type = key >> 3, key & 7
    if field == 0:
        raise CaffemodelFormatError(f"field number 0 at byte {pos}")
    if wire_type == _VARINT:
        value, pos = _read_varint(data, pos, end)
        return field, wire_type, value, pos
    if wire_type == _LEN:
        length, start = _read_varint(data, pos, end)
        stop = start + length
    elif wire_type == _I64:
        start, stop = pos, pos + 8
    elif wire_type == _I32:
        start, stop = pos, pos + 4
    else:
        raise CaffemodelFormatError(
            f"unsupported wire type {wire_type} (field {field}) at byte {pos}"
        )
    if stop > end:
        raise CaffemodelFormatError(f"field {field} runs past the end of its message at byte {pos}")
    return field, wire_type, start, stop


def _read_string(data: bytes, start: int, stop: int) -> str:
    return data[start:stop].decode("utf-8", errors="replace")


def _packed_reals(data: bytes, start: int, stop: int, dtype: str) -> np.ndarray:
    """A packed run of little-endian floats or doubles, zero-copy (read-only view)."""
    width = np.dtype(dtype).itemsize
    if (stop - start) % width:
        raise CaffemodelFormatError(f"packed {dtype} run of {stop - start} bytes at byte {start}")
    return np.frombuffer(data, dtype=dtype, count=(stop - start) // width, offset=start)


def _unpacked_reals(raw: np.ndarray, tag_pos: int, end: int, dtype: str) -> tuple[np.ndarray, int]:
    """A run of consecutive unpacked elements ``[tag][value][tag][value]...`` at once.

    Parameters
    ----------
    raw : (L,) ndarray of uint8
        The whole file.
    tag_pos : int
        Offset of the first element's one-byte tag (fields 5 and 8 have one-byte tags).
    end : int
        End of the enclosing message.
    dtype : str
        ``"<f4"`` or ``"<f8"``.

    Returns
    -------
    values : (n,) ndarray
    next_pos : int
        Offset after the last element of the run.
    """
    width = np.dtype(dtype).itemsize
    stride = 1 + width
    n_max = (end - tag_pos) // stride
    records = raw[tag_pos : tag_pos + n_max * stride].reshape(n_max, stride)  # (n_max, 1 + width)
    breaks = np.flatnonzero(records[:, 0] != raw[tag_pos])
    n = int(breaks[0]) if breaks.size else n_max
    values = np.ascontiguousarray(records[:n, 1:]).view(dtype).reshape(n)  # (n,)
    return values, tag_pos + n * stride


def _read_dims(data: bytes, start: int, stop: int) -> list[int]:
    """The ``dim`` values of a ``BlobShape`` message (packed or not)."""
    dims: list[int] = []
    pos = start
    while pos < stop:
        field, wire_type, value, pos = _next_field(data, pos, stop)
        if field != _SHAPE_DIM:
            continue
        if wire_type == _VARINT:
            dims.append(_as_int64(value))
        elif wire_type == _LEN:
            inner = value
            while inner < pos:
                dim, inner = _read_varint(data, inner, pos)
                dims.append(_as_int64(dim))
    return dims


def _read_blob(data: bytes, raw: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Decode one ``BlobProto`` into an owned array of the file's shape."""
    legacy: dict[int, int] = {}
    shape: list[int] | None = None
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    pos = start
    while pos < stop:
        tag_pos = pos
        field, wire_type, value, pos = _next_field(data, pos, stop)
        if field in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH) and wire_type == _VARINT:
            legacy[field] = _as_int64(value)
        elif field == _BLOB_SHAPE and wire_type == _LEN:
            shape = _read_dims(data, value, pos)
        elif field in (_BLOB_DATA, _BLOB_DOUBLE_DATA):
            dtype, scalar_wire_type, chunks = (
                ("<f4", _I32, floats) if field == _BLOB_DATA else ("<f8", _I64, doubles)
            )
            if wire_type == _LEN:
                chunks.append(_packed_reals(data, value, pos, dtype))
            elif wire_type == scalar_wire_type and value - tag_pos == 1:  # one-byte tag
                values, pos = _unpacked_reals(raw, tag_pos, stop, dtype)
                chunks.append(values)
            elif wire_type == scalar_wire_type:  # an over-long tag: one element
                chunks.append(_packed_reals(data, value, pos, dtype))
            else:
                raise CaffemodelFormatError(
                    f"blob data with wire type {wire_type} at byte {tag_pos}"
                )
        # diff (6), double_diff (9) and unknown fields are skipped
    chunks = floats if floats else doubles
    values = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)  # owned copy
    if shape is None:
        # legacy blobs: (num, channels, height, width), unset fields 0 as in Caffe
        shape = [legacy.get(f, 0) for f in (1, 2, 3, 4)] if legacy else [values.size]
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != values.size:
        raise CaffemodelFormatError(
            f"blob at byte {start} has shape {tuple(shape)} but {values.size} values"
        )
    return values.reshape(shape)


def _read_layer(
    data: bytes, raw: np.ndarray, start: int, stop: int, schema: _LayerSchema
) -> CaffeLayer:
    """Decode the name, type and blobs of one layer message."""
    name, type_name = "", ""
    blobs: list[np.ndarray] = []
    nested: CaffeLayer | None = None
    pos = start
    while pos < stop:
        field, wire_type, value, pos = _next_field(data, pos, stop)
        if field == schema.name and wire_type == _LEN:
            name = _read_string(data, value, pos)
        elif field == schema.type and schema.type_is_enum and wire_type == _VARINT:
            type_name = _V1_TYPE_NAMES.get(value, f"V1:{value}")
        elif field == schema.type and not schema.type_is_enum and wire_type == _LEN:
            type_name = _read_string(data, value, pos)
        elif field == schema.blobs and wire_type == _LEN:
            blobs.append(_read_blob(data, raw, value, pos))
        elif field == schema.nested_v0 and wire_type == _LEN:
            nested = _read_layer(data, raw, value, pos, _LAYER_V0)
    if nested is not None:  # a V1 layer upgraded from V0 keeps its contents in the V0 part
        name = name or nested.name
        type_name = type_name or nested.type
        blobs = blobs or list(nested.blobs)
    return CaffeLayer(name=name, type=type_name, blobs=tuple(blobs))


def read_caffemodel(path: str | Path) -> list[CaffeLayer]:
    """Read every layer of a Caffe ``NetParameter`` file, in file order.

    Parameters
    ----------
    path : str or Path
        A binary ``.caffemodel`` (the weights file, not the ``.prototxt``).

    Returns
    -------
    list of CaffeLayer
        Layers of the ``layer`` field first, then those of the deprecated ``layers`` field
        (a file normally has only one of the two).

    Raises
    ------
    WeightsError
        If the file is missing, is not a protobuf ``NetParameter``, or has no layers.
    """
    path = Path(path)
    data = _read_bytes(path)
    raw = np.frombuffer(data, dtype=np.uint8)  # (L,)
    new: list[CaffeLayer] = []
    old: list[CaffeLayer] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            field, wire_type, value, pos = _next_field(data, pos, end)
            if field == _NET_LAYER and wire_type == _LEN:
                new.append(_read_layer(data, raw, value, pos, _LAYER))
            elif field == _NET_LAYERS_V1 and wire_type == _LEN:
                old.append(_read_layer(data, raw, value, pos, _LAYER_V1))
    except CaffemodelFormatError as err:
        raise WeightsError(
            f"{path} is not a valid Caffe .caffemodel ({err}); pass the binary weights file "
            "(e.g. bvlc_reference_caffenet.caffemodel), not a .prototxt or a renamed file"
        ) from err
    layers = new + old
    if not layers:
        raise WeightsError(f"{path} holds no Caffe layers; pass a binary .caffemodel weights file")
    return layers


def load_caffemodel(path: str | Path) -> Params:
    """The parameter blobs of a ``.caffemodel``, by layer name.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict of str to list of ndarray
        ``{layer name: [weight, bias]}`` for each layer that has blobs, in the file's shapes
        (a legacy file stores fc weights as ``(1, 1, out, in)`` and biases as
        ``(1, 1, 1, out)``; :func:`find_mismatches` accepts those).

    Raises
    ------
    WeightsError
        If the file cannot be read, or two layers with blobs share a name.
    """
    params: Params = {}
    for layer in read_caffemodel(path):
        if not layer.blobs:
            continue
        if layer.name in params:
            raise WeightsError(
                f"{path}: two layers with parameters are named {layer.name!r}; "
                "rename one in the Caffe net before converting"
            )
        params[layer.name] = list(layer.blobs)
    return params


# --- .npz ----------------------------------------------------------------------------------
# Canonical keys are "<layer>/weight" and "<layer>/bias"; the spellings of common converters
# are accepted too: "<layer>.weight", "<layer>_0"/"<layer>_1", "<layer>_W"/"<layer>_b",
# "<layer>/weights"/"<layer>/biases".
_NPZ_KEY = re.compile(r"^(?P<layer>.+?)[/.:_](?P<part>weights?|bias(?:es)?|W|b|0|1)$")
_NPZ_PART_INDEX = {
    "weight": 0,
    "weights": 0,
    "W": 0,
    "0": 0,
    "bias": 1,
    "biases": 1,
    "b": 1,
    "1": 1,
}


def load_npz(path: str | Path) -> Params:
    """The parameters in a NumPy ``.npz`` archive, by layer name.

    Parameters
    ----------
    path : str or Path
        An archive with one array per key ``"<layer>/weight"`` and ``"<layer>/bias"`` in
        Caffe / PyTorch layout (``np.savez(path, **{"conv1/weight": w, ...})``). Accepted
        spellings of the suffix: ``/weight .weight _0 _W /weights`` and
        ``/bias .bias _1 _b /biases``. Layer names are those of the architecture's weight
        files: Caffe's (``conv1`` ... ``fc8``) or PyTorch state-dict prefixes
        (``features.0``).

    Returns
    -------
    dict of str to list of ndarray
        ``{layer: [weight, bias]}``.

    Raises
    ------
    WeightsError
        For a missing or unreadable file, a key that names no weight or bias, or a layer
        given twice under different spellings.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}; check the path")
    parts: dict[str, dict[int, np.ndarray]] = {}
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise WeightsError(f"{path} is not a readable .npz archive ({err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise WeightsError(
            f"{path} holds a single array, not an .npz archive of named arrays; "
            "save it with np.savez(path, **{'conv1/weight': w, 'conv1/bias': b, ...})"
        )
    try:
        with archive:
            for key in archive.files:
                match = _NPZ_KEY.match(key)
                if match is None:
                    raise WeightsError(
                        f"{path}: key {key!r} is not '<layer>/weight' or '<layer>/bias'; "
                        "save the archive with keys like 'conv1/weight', 'conv1/bias'"
                    )
                layer, index = match["layer"], _NPZ_PART_INDEX[match["part"]]
                if index in parts.setdefault(layer, {}):
                    raise WeightsError(
                        f"{path}: layer {layer!r} has its {('weight', 'bias')[index]} twice "
                        "under different key spellings; keep one"
                    )
                parts[layer][index] = archive[key]
    except (OSError, ValueError) as err:
        raise WeightsError(f"{path} is not a readable .npz archive ({err})") from err
    params: Params = {}
    for layer, found in parts.items():
        if sorted(found) != list(range(len(found))):
            raise WeightsError(f"{path}: layer {layer!r} has a bias but no weight; add it")
        params[layer] = [found[i] for i in range(len(found))]
    return params


# --- .pth / .pt ----------------------------------------------------------------------------
def load_torch(path: str | Path) -> dict[str, torch.Tensor]:
    """A PyTorch state dict, loaded with ``weights_only=True`` onto the CPU.

    Parameters
    ----------
    path : str or Path
        A file written by ``torch.save(model.state_dict(), path)``. Two common wrappings
        are undone: a dict holding the state dict under ``"state_dict"`` or ``"model"``
        (training checkpoints), and a ``"module."`` prefix on every key
        (``nn.DataParallel``).

    Returns
    -------
    dict of str to Tensor

    Raises
    ------
    WeightsError
        For a missing file, a file that ``weights_only`` loading refuses, or contents that
        are not a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise WeightsError(
            f"{path} cannot be loaded with torch.load(weights_only=True) ({err}); "
            "save only tensors: torch.save(model.state_dict(), path)"
        ) from err
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsError(
            f"{path} does not hold a state dict (a dict of name -> tensor); "
            "save it with torch.save(model.state_dict(), path)"
        )
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def group_state_dict(state: Mapping[str, torch.Tensor]) -> Params:
    """Group ``"<layer>.weight"`` / ``"<layer>.bias"`` entries into :data:`Params`.

    Parameters
    ----------
    state : mapping of str to Tensor

    Returns
    -------
    dict of str to list of ndarray
        ``{layer: [weight, bias]}``; an entry that is neither weight nor bias (a buffer) is
        kept under its full key as a one-blob layer, so a strict match reports it.
    """
    parts: dict[str, dict[int, np.ndarray]] = {}
    for key, tensor in state.items():
        layer, _, part = key.rpartition(".")
        tensor = tensor.detach().cpu()
        array = (tensor.float() if tensor.is_floating_point() else tensor).numpy()
        if part in ("weight", "bias") and layer:
            parts.setdefault(layer, {})[0 if part == "weight" else 1] = array
        else:
            parts.setdefault(key, {})[0] = array
    return {layer: [found[i] for i in sorted(found)] for layer, found in parts.items()}


def load_params(path: str | Path) -> Params:
    """Load any supported weight file as :data:`Params`, chosen by the file suffix.

    Parameters
    ----------
    path : str or Path
        ``.caffemodel`` (:func:`load_caffemodel`), ``.npz`` (:func:`load_npz`), ``.pth`` or
        ``.pt`` (:func:`load_torch`).

    Returns
    -------
    dict of str to list of ndarray

    Raises
    ------
    WeightsError
        For an unknown suffix or a file its loader refuses.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".caffemodel":
        return load_caffemodel(path)
    if suffix == ".npz":
        return load_npz(path)
    if suffix in (".pth", ".pt"):
        return group_state_dict(load_torch(path))
    raise WeightsError(
        f"unknown weights file type {path.name!r}; use one of {', '.join(WEIGHT_SUFFIXES)} "
        "or 'random:SEED'"
    )


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}; check the path")
    return path.read_bytes()


def file_sha256(path: str | Path, *, chunk_bytes: int = 1 << 24) -> str:
    """Hex SHA-256 of a file, read in chunks (weights provenance)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


# --- matching a file to a module -----------------------------------------------------------
@dataclass(frozen=True)
class ExpectedLayer:
    """A parametrised layer a module expects from a weights file.

    Attributes
    ----------
    name : str
        Its name in the architecture's weight files (``"conv1"`` for Caffe,
        ``"features.0"`` for torchvision).
    module_path : str
        Its path in the module (``"features.conv1"``); also accepted as a name in a file.
    shapes : tuple of tuple of int
        ``(weight shape, bias shape)``.
    """

    name: str
    module_path: str
    shapes: tuple[tuple[int, ...], ...]


def expected_layers(module: nn.Module, layer_map: Mapping[str, str]) -> list[ExpectedLayer]:
    """The layers ``module`` expects, from ``{file layer name: module path}``.

    Parameters
    ----------
    module : nn.Module
        May live on the ``meta`` device (only shapes are read).
    layer_map : mapping of str to str

    Returns
    -------
    list of ExpectedLayer
    """
    layers = []
    for name, module_path in layer_map.items():
        sub = module.get_submodule(module_path)
        blobs = (sub.get_parameter("weight"), sub.get_parameter("bias"))
        shapes = tuple(tuple(p.shape) for p in blobs)
        layers.append(ExpectedLayer(name=name, module_path=module_path, shapes=shapes))
    return layers


def _strip_leading_ones(shape: Iterable[int]) -> tuple[int, ...]:
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    return tuple(dims)


def _fits(found: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Same shape, or the same after dropping leading 1s (Caffe's legacy 4-D blobs)."""
    return found == expected or _strip_leading_ones(found) == _strip_leading_ones(expected)


def _describe(shapes: Sequence[tuple[int, ...]]) -> str:
    labels = ("weight", "bias")
    return ", ".join(
        f"{labels[i] if i < 2 else f'blob{i}'} {shape}" for i, shape in enumerate(shapes)
    )


def _lookup(
    params: Mapping[str, Sequence[np.ndarray]], layer: ExpectedLayer
) -> tuple[str | None, list[str]]:
    """The key of ``layer`` in ``params`` (by file name or module path) and any problem."""
    keys = [k for k in dict.fromkeys((layer.name, layer.module_path)) if k in params]
    if len(keys) > 1:
        return keys[0], [f"duplicate {layer.name}: present as both {keys[0]!r} and {keys[1]!r}"]
    return (keys[0] if keys else None), []


def find_mismatches(
    params: Mapping[str, Sequence[np.ndarray]], expected: Sequence[ExpectedLayer]
) -> list[str]:
    """Every difference between a file's parameters and the layers a module expects.

    Parameters
    ----------
    params : mapping of str to sequence of ndarray
        As returned by the loaders.
    expected : sequence of ExpectedLayer

    Returns
    -------
    list of str
        One line per missing layer (with the expected shapes), misshaped or missing blob
        (found vs expected) and unexpected layer (with its shapes); empty when the file fits.
        A stored shape with extra leading 1s (Caffe's legacy ``(1, 1, 4096, 9216)``) fits.
    """
    problems: list[str] = []
    used: set[str] = set()
    for layer in expected:
        key, duplicate = _lookup(params, layer)
        problems += duplicate
        if key is None:
            problems.append(f"missing {layer.name}: expected {_describe(layer.shapes)}")
            continue
        used.add(key)
        blobs = params[key]
        found = [tuple(np.shape(b)) for b in blobs]
        if len(blobs) != len(layer.shapes):
            problems.append(
                f"misshaped {layer.name}: found {len(blobs)} blobs ({_describe(found)}), "
                f"expected {_describe(layer.shapes)}"
            )
            continue
        for label, got, want in zip(("weight", "bias"), found, layer.shapes):
            if not _fits(got, want):
                problems.append(f"misshaped {layer.name}.{label}: found {got}, expected {want}")
    for key in params:
        if key not in used:
            problems.append(
                f"unexpected {key}: found {_describe([tuple(np.shape(b)) for b in params[key]])}"
            )
    return problems


def mismatch_message(
    source: str | Path, arch: str, problems: Sequence[str], fits: Sequence[str] = ()
) -> str:
    """The message of the WeightsError for a file that does not fit ``arch``.

    Parameters
    ----------
    source : str or Path
        The weights file.
    arch : str
        The architecture asked for.
    problems : sequence of str
        From :func:`find_mismatches`.
    fits : sequence of str
        Other architectures the file does fit; the first is suggested.
    """
    limit = 24
    lines = list(problems[:limit])
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    if fits:
        fix = (
            f"the file fits architecture {fits[0]!r}: build it with arch={fits[0]!r} "
            f"(--arch {fits[0]})"
        )
    else:
        fix = f"pass a weights file of the {arch!r} architecture, or 'random:SEED'"
    body = "\n  ".join(lines)
    return f"weights file {source} does not fit architecture {arch!r}:\n  {body}\n{fix}"


def to_state_dict(
    params: Mapping[str, Sequence[np.ndarray]], expected: Sequence[ExpectedLayer]
) -> dict[str, torch.Tensor]:
    """The state dict (float32 tensors in the module's shapes) for a matching file.

    Parameters
    ----------
    params : mapping of str to sequence of ndarray
    expected : sequence of ExpectedLayer

    Returns
    -------
    dict of str to Tensor
        ``{"<module path>.weight": ..., "<module path>.bias": ...}``.

    Raises
    ------
    WeightsError
        If :func:`find_mismatches` reports anything (call it first for a better message).
    """
    problems = find_mismatches(params, expected)
    if problems:
        raise WeightsError("weights do not fit the module:\n  " + "\n  ".join(problems))
    state: dict[str, torch.Tensor] = {}
    for layer in expected:
        key, _ = _lookup(params, layer)
        assert key is not None  # find_mismatches reported no missing layer
        for label, blob, shape in zip(("weight", "bias"), params[key], layer.shapes):
            array = np.array(blob, dtype=np.float32).reshape(shape)  # owned, writable copy
            state[f"{layer.module_path}.{label}"] = torch.from_numpy(array)
    return state
