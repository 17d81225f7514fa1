"""Weight files: the .caffemodel wire reader, .npz / .pth loaders, strict matching.

Every file is written here: .caffemodel bytes by the minimal protobuf writer below (both the
current ``layer`` and the V1 ``layers`` fields, ``shape`` and legacy 4-D blob dims, packed and
unpacked floats), .npz by ``np.savez``, .pth by ``torch.save``. Networks built from them are
checked against an independent forward written with ``torch.nn.functional`` on real images.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import skimage.transform
import torch
import torch.nn.functional as F

from pipeline.alexnet import LAYERS, build, preprocess
from pipeline.alexnet.weights import (
    find_mismatches,
    load_caffemodel,
    load_npz,
    load_params,
    load_torch,
    read_caffemodel,
)
from pipeline.errors import WeightsError

# --- a minimal protobuf writer (wire format, https://protobuf.dev/programming-guides/encoding/)
VARINT, I64, LEN, I32 = 0, 1, 2, 5
V1_CONVOLUTION, V1_INNER_PRODUCT, V1_RELU = 4, 14, 18


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as 10-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def field_varint(field: int, value: int) -> bytes:
    return key(field, VARINT) + varint(value)


def field_bytes(field: int, payload: bytes) -> bytes:
    return b"".join([key(field, LEN), varint(len(payload)), payload])


def field_str(field: int, text: str) -> bytes:
    return field_bytes(field, text.encode())


def blob(
    array: np.ndarray,
    *,
    legacy: bool = False,
    packed: bool = True,
    double: bool = False,
    chunks: int = 1,
) -> bytes:
    """A BlobProto: dims as ``shape`` (field 7) or legacy num/channels/height/width (1-4)."""
    array = np.asarray(array)
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape  # Caffe's legacy 4-D, leading 1s
        out = [field_varint(f, d) for f, d in zip((1, 2, 3, 4), dims)]
    else:
        out = [field_bytes(7, field_bytes(1, b"".join(varint(d) for d in array.shape)))]
    field, dtype, wire_type = (8, "<f8", I64) if double else (5, "<f4", I32)
    flat = array.astype(dtype).reshape(-1)
    if packed:
        for part in np.array_split(flat, chunks):  # a packed field may come in several pieces
            out.append(field_bytes(field, part.tobytes()))
    else:
        width = np.dtype(dtype).itemsize
        records = np.empty((flat.size, 1 + width), np.uint8)  # [tag][value] per element
        records[:, 0] = key(field, wire_type)[0]
        records[:, 1:] = flat.view(np.uint8).reshape(-1, width)
        out.append(records.tobytes())
    return b"".join(out)


def layer_msg(name: str, kind: str, blobs: Sequence[bytes], *, v1: bool) -> bytes:
    """A LayerParameter (name 1, type 2, blobs 7) or V1LayerParameter (4, 5 enum, 6)."""
    if v1:
        enum = {"Convolution": V1_CONVOLUTION, "InnerProduct": V1_INNER_PRODUCT}.get(kind, V1_RELU)
        out = [field_str(4, name), field_varint(5, enum)]
        out.append(key(7, I32) + np.float32(1.0).tobytes())  # blobs_lr: an unpacked float
        out += [field_bytes(6, b) for b in blobs]
    else:
        out = [field_str(1, name), field_str(2, kind)] + [field_bytes(7, b) for b in blobs]
        out.append(field_bytes(6, field_str(1, "w_lr")))  # ParamSpec, a submessage to skip
    out.append(key(999, I64) + bytes(8))  # an unknown fixed64 field to skip
    return b"".join(out)


def caffemodel_bytes(
    params: dict[str, list[np.ndarray]], *, v1: bool, legacy: bool, packed: bool = True
) -> bytes:
    """A NetParameter with a data-less ReLU between the parametrised layers."""
    out = [field_str(1, "CaffeNet")]
    for name, arrays in params.items():
        kind = "Convolution" if arrays[0].ndim == 4 else "InnerProduct"
        blobs = [blob(a, legacy=legacy, packed=packed) for a in arrays]
        out.append(field_bytes(2 if v1 else 100, layer_msg(name, kind, blobs, v1=v1)))
        out.append(field_bytes(2 if v1 else 100, layer_msg(f"relu_{name}", "ReLU", [], v1=v1)))
    return b"".join(out)


# --- parameters and the independent forward passes ----------------------------------------
CAFFENET_SHAPES = {  # Caffe blob shapes of bvlc_reference_caffenet
    "conv1": (96, 3, 11, 11),
    "conv2": (256, 48, 5, 5),
    "conv3": (384, 256, 3, 3),
    "conv4": (384, 192, 3, 3),
    "conv5": (256, 192, 3, 3),
    "fc6": (4096, 9216),
    "fc7": (4096, 4096),
    "fc8": (1000, 4096),
}
TORCHVISION_SHAPES = {
    "features.0": (64, 3, 11, 11),
    "features.3": (192, 64, 5, 5),
    "features.6": (384, 192, 3, 3),
    "features.8": (256, 384, 3, 3),
    "features.10": (256, 256, 3, 3),
    "classifier.1": (4096, 9216),
    "classifier.4": (4096, 4096),
    "classifier.6": (1000, 4096),
}
CAFFE_MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434], np.float32)


def random_params(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, list[np.ndarray]]:
    """He-scaled weights and small non-zero biases, float32."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        weight = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
        bias = rng.standard_normal(shape[0], dtype=np.float32) * np.float32(0.1)
        params[name] = [weight, bias]
    return params


def flat(
    params: dict[str, list[np.ndarray]],
    pattern: str = "{n}.{p}",
    parts: Sequence[str] = ("weight", "bias"),
) -> dict[str, np.ndarray]:
    """One array per key, e.g. ``{"conv1.weight": w, "conv1.bias": b, ...}``."""
    return {
        pattern.format(n=n, p=p): a for n, blobs in params.items() for p, a in zip(parts, blobs)
    }


def as_state(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: tensor(v) for k, v in arrays.items()}


def tensor(array: np.ndarray, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    return torch.from_numpy(np.array(array, np.float32).reshape(shape or array.shape))


def reference_caffenet(
    images: np.ndarray, p: dict[str, list[np.ndarray]]
) -> dict[str, torch.Tensor]:
    """CaffeNet by hand: crop 227 at offset 14, BGR, minus mean, then Table 1."""
    x = images[:, 14:241, 14:241, ::-1].astype(np.float32) - CAFFE_MEAN_BGR  # (N, 227, 227, 3)
    x = tensor(x.transpose(0, 3, 1, 2))  # (N, 3, 227, 227) BGR

    def conv(x: torch.Tensor, name: str, **kw: int) -> torch.Tensor:
        weight, bias = p[name]
        return F.relu(F.conv2d(x, tensor(weight), tensor(bias, (-1,)), **kw))

    def fc(x: torch.Tensor, name: str) -> torch.Tensor:
        weight, bias = p[name]
        out = bias.size
        return F.linear(x, tensor(weight, (out, -1)), tensor(bias, (-1,)))

    def lrn(x: torch.Tensor) -> torch.Tensor:
        return F.local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=1.0)

    a: dict[str, torch.Tensor] = {}
    a["conv1"] = x = lrn(F.max_pool2d(conv(x, "conv1", stride=4), 3, 2))
    a["conv2"] = x = lrn(F.max_pool2d(conv(x, "conv2", padding=2, groups=2), 3, 2))
    a["conv3"] = x = conv(x, "conv3", padding=1)
    a["conv4"] = x = conv(x, "conv4", padding=1, groups=2)
    a["conv5"] = x = F.max_pool2d(conv(x, "conv5", padding=1, groups=2), 3, 2)
    a["fc6"] = x = F.relu(fc(x.reshape(x.shape[0], -1), "fc6"))
    a["fc7"] = x = F.relu(fc(x, "fc7"))
    a["fc8"] = fc(x, "fc8")
    return a


def reference_torchvision(
    images: np.ndarray, p: dict[str, list[np.ndarray]]
) -> dict[str, torch.Tensor]:
    """torchvision's AlexNet by hand: crop 224 at offset 16, [0, 1], ImageNet mean/std."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = (images[:, 16:240, 16:240, :] / 255.0 - mean) / std  # (N, 224, 224, 3) RGB
    x = tensor(x.transpose(0, 3, 1, 2))  # (N, 3, 224, 224)

    def conv(x: torch.Tensor, name: str, **kw: int) -> torch.Tensor:
        return F.relu(F.conv2d(x, tensor(p[name][0]), tensor(p[name][1]), **kw))

    def fc(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, tensor(p[name][0]), tensor(p[name][1]))

    a: dict[str, torch.Tensor] = {}
    a["conv1"] = x = F.max_pool2d(conv(x, "features.0", stride=4, padding=2), 3, 2)
    a["conv2"] = x = F.max_pool2d(conv(x, "features.3", padding=2), 3, 2)
    a["conv3"] = x = conv(x, "features.6", padding=1)
    a["conv4"] = x = conv(x, "features.8", padding=1)
    x = F.max_pool2d(conv(x, "features.10", padding=1), 3, 2)
    a["conv5"] = x = F.adaptive_avg_pool2d(x, (6, 6))
    a["fc6"] = x = F.relu(fc(x.flatten(1), "classifier.1"))
    a["fc7"] = x = F.relu(fc(x, "classifier.4"))
    a["fc8"] = fc(x, "classifier.6")
    return a


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Three real photographs resized to the pipeline's 256x256, uint8 RGB."""
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    resized = [skimage.transform.resize(p, (256, 256), anti_aliasing=True) for p in photos]
    return np.stack([np.round(r * 255).astype(np.uint8) for r in resized])  # (3, 256, 256, 3)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A temporary folder whose full-size weight files (~240 MB each) go after the test."""
    yield tmp_path
    for path in tmp_path.iterdir():
        path.unlink()


@pytest.fixture(scope="module")
def caffenet_params() -> dict[str, list[np.ndarray]]:
    return random_params(CAFFENET_SHAPES, seed=1)


@pytest.fixture(scope="module")
def torchvision_params() -> dict[str, list[np.ndarray]]:
    return random_params(TORCHVISION_SHAPES, seed=2)


def assert_activations_match(
    arch: str, weights: Path, images: np.ndarray, reference: dict[str, torch.Tensor]
) -> None:
    model = build(arch, weights=weights)
    with torch.no_grad():
        got = model.forward_layers(preprocess(images, arch), LAYERS)
    for layer in LAYERS:
        ref = reference[layer]
        atol = 1e-4 * float(ref.abs().max())
        torch.testing.assert_close(got[layer], ref, rtol=1e-4, atol=atol, msg=layer)


# --- full networks from every file format --------------------------------------------------
@pytest.mark.parametrize(
    ("v1", "legacy", "packed"),
    [(False, False, True), (True, True, False)],
    ids=["layer-shape-packed", "v1-legacy4d-unpacked"],
)
def test_caffenet_from_caffemodel_matches_reference(
    scratch: Path,
    images: np.ndarray,
    caffenet_params: dict[str, list[np.ndarray]],
    v1: bool,
    legacy: bool,
    packed: bool,
) -> None:
    path = scratch / "net.caffemodel"
    path.write_bytes(caffemodel_bytes(caffenet_params, v1=v1, legacy=legacy, packed=packed))
    if legacy:  # fc6 stored as Caffe's legacy (1, 1, 4096, 9216), biases (1, 1, 1, n)
        assert load_caffemodel(path)["fc6"][0].shape == (1, 1, 4096, 9216)
        assert load_caffemodel(path)["fc6"][1].shape == (1, 1, 1, 4096)
    assert_activations_match("caffenet", path, images, reference_caffenet(images, caffenet_params))


def test_caffenet_from_npz_and_pth_matches_reference(
    scratch: Path, images: np.ndarray, caffenet_params: dict[str, list[np.ndarray]]
) -> None:
    reference = reference_caffenet(images, caffenet_params)
    npz = scratch / "net.npz"
    np.savez(npz, **flat(caffenet_params, "{n}/{p}"))
    assert_activations_match("caffenet", npz, images, reference)
    # our own state dict, keyed by module path ("features.conv1.weight")
    pth = scratch / "net.pth"
    by_path = {
        ("features." if n.startswith("conv") else "classifier.") + n: blobs
        for n, blobs in caffenet_params.items()
    }
    torch.save(as_state(flat(by_path)), pth)
    assert_activations_match("caffenet", pth, images, reference)


def test_torchvision_from_pth_and_npz_matches_reference(
    scratch: Path, images: np.ndarray, torchvision_params: dict[str, list[np.ndarray]]
) -> None:
    reference = reference_torchvision(images, torchvision_params)
    state = as_state(flat(torchvision_params))
    pth = scratch / "alexnet-owt.pth"
    torch.save(state, pth)
    assert_activations_match("torchvision", pth, images, reference)
    npz = scratch / "alexnet.npz"
    np.savez(npz, **{k: v.numpy() for k, v in state.items()})  # "features.0.weight" keys
    assert_activations_match("torchvision", npz, images, reference)


# --- strict matching -----------------------------------------------------------------------
def test_torchvision_file_into_caffenet_names_the_right_arch(
    scratch: Path, torchvision_params: dict[str, list[np.ndarray]]
) -> None:
    pth = scratch / "alexnet.pth"
    torch.save(as_state(flat(torchvision_params)), pth)
    match = (
        r"(?s)missing conv1: expected weight \(96, 3, 11, 11\)"
        r".*unexpected features\.0: found weight \(64, 3, 11, 11\)"
        r".*fits architecture 'torchvision'.*--arch torchvision"
    )
    with pytest.raises(WeightsError, match=match):
        build("caffenet", weights=pth)


def test_missing_tensor_is_named(
    scratch: Path, caffenet_params: dict[str, list[np.ndarray]]
) -> None:
    npz = scratch / "no_fc8.npz"
    without_fc8 = {n: blobs for n, blobs in caffenet_params.items() if n != "fc8"}
    np.savez(npz, **flat(without_fc8, "{n}_{p}", parts=("0", "1")))
    with pytest.raises(WeightsError, match=r"missing fc8: expected weight \(1000, 4096\)"):
        build("caffenet", weights=npz)


def test_wrong_shape_is_named(scratch: Path, caffenet_params: dict[str, list[np.ndarray]]) -> None:
    params = dict(caffenet_params)
    params["fc7"] = [params["fc7"][0][:, :4000], params["fc7"][1]]
    npz = scratch / "bad_fc7.npz"
    np.savez(npz, **flat(params, "{n}_{p}", parts=("W", "b")))
    with pytest.raises(
        WeightsError, match=r"misshaped fc7\.weight: found \(4096, 4000\), expected \(4096, 4096\)"
    ):
        build("caffenet", weights=npz)


def test_find_mismatches_lists_unexpected_and_blob_counts() -> None:
    from pipeline.alexnet import CaffeNet
    from pipeline.alexnet.weights import expected_layers

    with torch.device("meta"):
        expected = expected_layers(CaffeNet(), CaffeNet.PARAM_LAYERS)
    params = {
        n: [np.zeros(s, np.float32), np.zeros(s[0], np.float32)] for n, s in CAFFENET_SHAPES.items()
    }
    assert find_mismatches(params, expected) == []
    params["fc9"] = [np.zeros((3, 4), np.float32)]
    params["conv1"] = params["conv1"][:1]
    problems = find_mismatches(params, expected)
    assert any(p.startswith("misshaped conv1: found 1 blobs") for p in problems)
    assert "unexpected fc9: found weight (3, 4)" in problems


# --- the wire reader on small messages -----------------------------------------------------
def test_caffemodel_layer_format_reads_names_types_and_blobs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    layer = layer_msg("conv1", "Convolution", [blob(w, chunks=3), blob(b)], v1=False)
    data = field_str(1, "tiny") + field_bytes(100, layer)
    data += field_bytes(100, layer_msg("relu1", "ReLU", [], v1=False))
    path = tmp_path / "tiny.caffemodel"
    path.write_bytes(data)
    layers = read_caffemodel(path)
    assert [(x.name, x.type, len(x.blobs)) for x in layers] == [
        ("conv1", "Convolution", 2),
        ("relu1", "ReLU", 0),
    ]
    params = load_caffemodel(path)
    assert list(params) == ["conv1"]
    np.testing.assert_array_equal(params["conv1"][0], w)
    np.testing.assert_array_equal(params["conv1"][1], b)


def test_caffemodel_v1_legacy_unpacked_double_and_v0(tmp_path: Path) -> None:
    w = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    b = np.array([0.25, -1.0, 3.0])
    blobs = [blob(w, legacy=True, packed=False), blob(b, legacy=True, double=True)]
    v1 = layer_msg("fc", "InnerProduct", blobs, v1=True)
    # a V0 layer (name 1, type 2, blobs 50) nested in a nameless V1 layer (field 1)
    v0 = field_str(1, "old") + field_str(2, "innerproduct") + field_bytes(50, blob(b))
    data = field_bytes(2, v1) + field_bytes(2, field_bytes(1, v0))
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(data)
    layers = read_caffemodel(path)
    assert [(x.name, x.type) for x in layers] == [("fc", "InnerProduct"), ("old", "innerproduct")]
    fc = load_caffemodel(path)["fc"]
    assert fc[0].shape == (1, 1, 3, 4) and fc[0].dtype == np.float32
    np.testing.assert_array_equal(fc[0].reshape(3, 4), w)
    assert fc[1].dtype == np.float64
    np.testing.assert_array_equal(fc[1].reshape(-1), b)


def test_negative_and_multibyte_varints() -> None:
    from pipeline.alexnet.weights import _as_int64, _read_varint

    for value in (0, 1, 127, 128, 300, 2**35 + 7, -1, -(2**40)):
        data = varint(value)
        decoded, end = _read_varint(data, 0, len(data))
        assert (_as_int64(decoded), end) == (value, len(data))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x0a\x05ab", "not a valid Caffe .caffemodel"),  # length runs past the end
        (b"\x0b\x00", "not a valid Caffe .caffemodel"),  # wire type 3 (group)
        (field_str(1, "empty net"), "holds no Caffe layers"),
        (
            field_bytes(
                100, field_bytes(7, b"".join(map(field_varint, (1, 2, 3, 4), (2, 2, 1, 1))))
            ),
            r"blob at byte .* has shape \(2, 2, 1, 1\) but 0 values",
        ),
        (
            field_bytes(100, field_bytes(7, blob(np.ones(3))[:-4])),  # drop the last float
            "not a valid Caffe .caffemodel",
        ),
    ],
)
def test_bad_caffemodel_is_refused(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    with pytest.raises(WeightsError, match=match):
        read_caffemodel(path)


# --- .npz and .pth loaders -----------------------------------------------------------------
def test_npz_key_spellings(tmp_path: Path) -> None:
    w, b = np.ones((2, 3), np.float32), np.zeros(2, np.float32)
    path = tmp_path / "w.npz"
    spellings = [
        ("conv1/weight", "conv1/bias"),
        ("fc6_0", "fc6_1"),
        ("fc7_W", "fc7_b"),
        ("features.0.weight", "features.0.bias"),
        ("fc8/weights", "fc8/biases"),
    ]
    np.savez(path, **{k: a for pair in spellings for k, a in zip(pair, (w, b))})
    params = load_npz(path)
    assert sorted(params) == ["conv1", "fc6", "fc7", "fc8", "features.0"]
    for blobs in params.values():
        np.testing.assert_array_equal(blobs[0], w)
        np.testing.assert_array_equal(blobs[1], b)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"conv1": np.ones(2)}, "key 'conv1' is not '<layer>/weight'"),
        ({"conv1/weight": np.ones(2), "conv1_0": np.ones(2)}, "has its weight twice"),
        ({"conv1/bias": np.ones(2)}, "has a bias but no weight"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    path = tmp_path / "w.npz"
    np.savez(path, **arrays)
    with pytest.raises(WeightsError, match=match):
        load_npz(path)


def test_npz_holding_one_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    with path.open("wb") as f:
        np.save(f, np.ones(3))
    with pytest.raises(WeightsError, match="single array"):
        load_npz(path)


def test_torch_wrappers_are_undone(tmp_path: Path) -> None:
    state = {"features.0.weight": torch.ones(2, 3), "features.0.bias": torch.zeros(2)}
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = load_torch(path)
    assert sorted(loaded) == sorted(state)
    assert load_params(path)["features.0"][0].shape == (2, 3)


class _NotWeights:
    pass


def test_torch_file_refused_by_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "pickle.pt"
    path.write_bytes(pickle.dumps(_NotWeights(), protocol=2))
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_torch(path)
    torch.save([torch.ones(1)], path)
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        load_torch(path)


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"unknown weights file type 'w\.h5'.*\.caffemodel"):
        load_params(tmp_path / "w.h5")
    with pytest.raises(WeightsError, match="no weights file at"):
        load_params(tmp_path / "absent.caffemodel")
