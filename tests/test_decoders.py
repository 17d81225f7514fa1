"""Tests of :mod:`pipeline.decoders` against the supplement's Tables 2–6.

The layer tables below are written out again from docs/method.md §4, independently of the
module, so a
slip in either shows up as a mismatch. Full-width models are built on the ``meta`` device:
shapes and parameter counts without allocating ~10⁸ floats.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from pipeline import decoders
from pipeline.decoders import TARGETS, build, input_shape, output_size, parameter_count
from pipeline.errors import ConfigError

SMALL_WIDTH = 0.125  # smallest widths keep the suite fast; hidden layers floor at 8 channels

# (name, kind, kernel, stride, in_channels, out_channels, output spatial size); kind "fc" has
# kernel/stride 0 and output size 0. Tables 2–6 of the supplement, docs/method.md §4.
HOG_TABLE = [
    ("convA1", "conv", 5, 2, 31, 256, 16),
    ("convA2", "conv", 5, 2, 256, 512, 8),
    ("convA3", "conv", 3, 2, 512, 1024, 4),
    ("upconvA1", "upconv", 4, 2, 1024, 512, 8),
    ("upconvA2", "upconv", 4, 2, 512, 256, 16),
    ("upconvA3", "upconv", 4, 2, 256, 128, 32),
    ("convB1", "conv", 5, 1, 31, 128, 32),
    ("convB2", "conv", 3, 1, 128, 128, 32),
    ("convJ1", "conv", 3, 1, 256, 256, 32),
    ("convJ2", "conv", 3, 1, 256, 128, 32),
    ("upconvJ4", "upconv", 4, 2, 128, 64, 64),
    ("upconvJ5", "upconv", 4, 2, 64, 32, 128),
    ("upconvJ6", "upconv", 4, 2, 32, 3, 256),
]
SIFT_TABLE = [
    ("conv1", "conv", 5, 2, 133, 256, 32),
    ("conv2", "conv", 3, 2, 256, 512, 16),
    ("conv3", "conv", 3, 2, 512, 1024, 8),
    ("conv4", "conv", 3, 2, 1024, 2048, 4),
    ("conv5", "conv", 3, 1, 2048, 2048, 4),
    ("conv6", "conv", 3, 1, 2048, 1024, 4),
    ("upconv1", "upconv", 4, 2, 1024, 512, 8),
    ("upconv2", "upconv", 4, 2, 512, 256, 16),
    ("upconv3", "upconv", 4, 2, 256, 128, 32),
    ("upconv4", "upconv", 4, 2, 128, 64, 64),
    ("upconv5", "upconv", 4, 2, 64, 32, 128),
    ("upconv6", "upconv", 4, 2, 32, 3, 256),
]
LBP_TABLE = [
    ("convA1", "conv", 5, 2, 58, 256, 8),
    ("convA2", "conv", 5, 2, 256, 512, 4),
    ("convA3", "conv", 3, 1, 512, 1024, 4),
    ("upconvA1", "upconv", 4, 2, 1024, 512, 8),
    ("upconvA2", "upconv", 4, 2, 512, 256, 16),
    ("convB1", "conv", 5, 1, 58, 128, 16),
    ("convB2", "conv", 3, 1, 128, 128, 16),
    ("convJ1", "conv", 3, 1, 384, 256, 16),
    ("convJ2", "conv", 3, 1, 256, 128, 16),
    ("upconvJ3", "upconv", 4, 2, 128, 128, 32),
    ("upconvJ4", "upconv", 4, 2, 128, 64, 64),
    ("upconvJ5", "upconv", 4, 2, 64, 32, 128),
    ("upconvJ6", "upconv", 4, 2, 32, 3, 256),
]


def conv_table(cin: int, n: int, upconv_channels: list[int]) -> list[tuple]:
    """Table 5 pattern: three K3 S1 convs of 256 at size n, then K5 S2 upconvs."""
    rows: list[tuple] = [
        ("conv1", "conv", 3, 1, cin, 256, n),
        ("conv2", "conv", 3, 1, 256, 256, n),
        ("conv3", "conv", 3, 1, 256, 256, n),
    ]
    channels = [256, *upconv_channels]
    for i in range(len(upconv_channels)):
        n *= 2
        rows.append((f"upconv{i + 1}", "upconv", 5, 2, channels[i], channels[i + 1], n))
    return rows


def fc_table(cin: int) -> list[tuple]:
    """Table 6 pattern: fc 4096 ×3, reshape 4×4×256, five K5 S2 upconvs."""
    return [
        ("fc1", "fc", 0, 0, cin, 4096, 0),
        ("fc2", "fc", 0, 0, 4096, 4096, 0),
        ("fc3", "fc", 0, 0, 4096, 4096, 0),
        ("upconv1", "upconv", 5, 2, 256, 256, 8),
        ("upconv2", "upconv", 5, 2, 256, 128, 16),
        ("upconv3", "upconv", 5, 2, 128, 64, 32),
        ("upconv4", "upconv", 5, 2, 64, 32, 64),
        ("upconv5", "upconv", 5, 2, 32, 3, 128),
    ]


TABLES = {
    "hog": HOG_TABLE,
    "sift": SIFT_TABLE,
    "lbp": LBP_TABLE,
    "conv1": conv_table(96, 27, [64, 32, 3]),  # project's choice: Table 5's channels per size
    "conv2": conv_table(256, 13, [128, 64, 32, 3]),
    "conv3": conv_table(384, 13, [128, 64, 32, 3]),
    "conv4": conv_table(384, 13, [128, 64, 32, 3]),
    "conv5": conv_table(256, 6, [256, 128, 64, 32, 3]),  # Table 5
    "fc6": fc_table(4096),
    "fc7": fc_table(4096),
    "fc8": fc_table(1000),  # Table 6
}


def table_params(table: list[tuple]) -> int:
    """Σ k·k·cin·cout + cout over a table's layers (k = 1 for fc)."""
    return sum(max(k, 1) ** 2 * cin * cout + cout for _, _, k, _, cin, cout, _ in table)


def layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's layers with parameters, by attribute name, in definition order."""
    return {name: m for name, m in model.named_children() if any(True for _ in m.parameters())}


def test_targets_and_sizes() -> None:
    assert TARGETS == (
        "hog", "sift", "lbp", "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8",
    )  # fmt: skip
    assert [output_size(t) for t in TARGETS] == [256] * 3 + [216] + [208] * 3 + [192] + [128] * 3
    assert input_shape("hog") == (31, 32, 32)
    assert input_shape("sift") == (133, 64, 64)
    assert input_shape("lbp") == (58, 16, 16)
    assert input_shape("conv1") == (96, 27, 27)
    assert input_shape("conv5") == (256, 6, 6)
    assert input_shape("fc8") == (1000,)
    assert input_shape("conv1", in_channels=64) == (64, 27, 27)


@pytest.mark.parametrize("target", TARGETS)
def test_forward_small_width(target: str) -> None:
    torch.manual_seed(0)
    model = build(target, width=SMALL_WIDTH)
    x = torch.randn(2, *input_shape(target))
    with torch.no_grad():
        y = model(x)
    s = output_size(target)
    assert y.shape == (2, 3, s, s)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("target", TARGETS)
def test_full_width_layers_match_table(target: str) -> None:
    """Every layer's kind, kernel, stride, channels and output size at width 1.0."""
    table = TABLES[target]
    with torch.device("meta"):
        model = build(target)
        found = layers(model)
        assert list(found) == [row[0] for row in table]
        sizes: dict[str, tuple[int, ...]] = {}
        for name, m in found.items():
            m.register_forward_hook(
                lambda _m, _i, out, name=name: sizes.update({name: tuple(out.shape)})
            )
        y = model(torch.empty(1, *input_shape(target)))
    s = output_size(target)
    assert tuple(y.shape) == (1, 3, s, s)
    for name, kind, k, stride, cin, cout, out_size in table:
        m = found[name]
        if kind == "fc":
            assert isinstance(m, nn.Linear), name
            assert (m.in_features, m.out_features) == (cin, cout), name
            continue
        assert type(m) is (nn.ConvTranspose2d if kind == "upconv" else nn.Conv2d), name
        assert m.kernel_size == (k, k), name
        assert m.stride == (stride, stride), name
        assert (m.in_channels, m.out_channels) == (cin, cout), name
        assert m.bias is not None, name
        assert sizes[name][1:] == (cout, out_size, out_size), name


@pytest.mark.parametrize("target", TARGETS)
def test_parameter_count_matches_table(target: str) -> None:
    assert parameter_count(target) == table_params(TABLES[target])


def test_parameter_count_of_named_tables() -> None:
    """Hand-summed counts of Tables 2, 5 and 6, so a slip in the test's tables shows too."""
    hog = (
        25 * 31 * 256 + 25 * 256 * 512 + 9 * 512 * 1024  # convA1..A3
        + 16 * (1024 * 512 + 512 * 256 + 256 * 128)  # upconvA1..A3
        + 25 * 31 * 128 + 9 * 128 * 128  # convB1, convB2
        + 9 * (256 * 256 + 256 * 128)  # convJ1, convJ2
        + 16 * (128 * 64 + 64 * 32 + 32 * 3)  # upconvJ4..J6
        + (256 + 512 + 1024 + 512 + 256 + 128 + 128 + 128 + 256 + 128 + 64 + 32 + 3)  # biases
    )  # fmt: skip
    conv5 = 3 * (9 * 256 * 256 + 256) + 25 * (
        256 * 256 + 256 * 128 + 128 * 64 + 64 * 32 + 32 * 3
    ) + (256 + 128 + 64 + 32 + 3)  # fmt: skip
    fc8 = (1000 * 4096 + 2 * 4096 * 4096 + 3 * 4096) + 25 * (
        256 * 256 + 256 * 128 + 128 * 64 + 64 * 32 + 32 * 3
    ) + (256 + 128 + 64 + 32 + 3)  # fmt: skip
    assert parameter_count("hog") == hog == 20_504_035
    assert parameter_count("conv5") == conv5 == 4_486_723
    assert parameter_count("fc8") == fc8 == 40_379_203


@pytest.mark.parametrize("target", TARGETS)
def test_width_scales_parameters(target: str) -> None:
    full = parameter_count(target)
    half = parameter_count(target, 0.5)
    small = parameter_count(target, SMALL_WIDTH)
    assert small < half < full
    assert parameter_count(target, 2.0) > full


def test_width_never_scales_input_or_output_channels() -> None:
    with torch.device("meta"):
        hog: Any = build("hog", width=0.25)  # Any: layers are read by attribute name
        fc8: Any = build("fc8", width=0.25)
    assert hog.convA1.in_channels == hog.convB1.in_channels == 31
    assert hog.convA1.out_channels == 64
    assert hog.upconvJ6.out_channels == 3
    assert fc8.fc1.in_features == 1000
    assert fc8.fc3.out_features == 16 * 64  # reshape stays 4×4 at 64 channels
    assert fc8.upconv5.out_channels == 3


def test_scaled_rounds_half_up_with_floor() -> None:
    assert decoders.scaled(256, 1.0) == 256
    assert decoders.scaled(256, 0.5) == 128
    assert decoders.scaled(25, 0.5) == 13  # 12.5 rounds up, not to even
    assert decoders.scaled(32, 0.125) == decoders.MIN_HIDDEN_CHANNELS  # 4 → floor of 8


def test_in_channels_override() -> None:
    """torchvision AlexNet's conv1 has 64 channels instead of Caffe's 96."""
    model: Any = build("conv1", width=SMALL_WIDTH, in_channels=64)
    assert model.conv1.in_channels == 64
    with torch.no_grad():
        y = model(torch.randn(1, *input_shape("conv1", in_channels=64)))
    assert y.shape == (1, 3, 216, 216)
    assert parameter_count("conv2", in_channels=192) < parameter_count("conv2")


@pytest.mark.parametrize("target", TARGETS)
def test_last_layer_has_no_activation(target: str) -> None:
    torch.manual_seed(0)
    model = build(target, width=SMALL_WIDTH)
    last = list(layers(model).values())[-1]
    seen: list[torch.Tensor] = []
    last.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        y = model(torch.randn(1, *input_shape(target)))
    assert torch.equal(y, seen[0])  # the image is the last layer's raw output


@pytest.mark.parametrize("target", TARGETS)
def test_gradient_reaches_every_parameter(target: str) -> None:
    torch.manual_seed(0)
    model = build(target, width=SMALL_WIDTH)
    y = model(torch.randn(2, *input_shape(target)))
    nn.functional.mse_loss(y, torch.rand_like(y)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_unknown_target() -> None:
    with pytest.raises(ConfigError, match=r"unknown decoder target 'HOG'.*hog, sift, lbp"):
        build("HOG")
    with pytest.raises(ConfigError, match="unknown decoder target"):
        input_shape("conv6")
    with pytest.raises(ConfigError, match="unknown decoder target"):
        output_size("fc9")
    with pytest.raises(ConfigError, match="unknown decoder target"):
        parameter_count("pool5")


@pytest.mark.parametrize("width", [0, -1.0, float("nan"), float("inf")])
def test_bad_width_value(width: float) -> None:
    with pytest.raises(ConfigError, match=r"width must be a finite number > 0"):
        build("hog", width=width)


@pytest.mark.parametrize("width", ["1.0", True, None])
def test_bad_width_type(width: object) -> None:
    with pytest.raises(ConfigError, match="width must be a number"):
        build("hog", width=width)  # type: ignore[arg-type]


@pytest.mark.parametrize("in_channels", [0, -3, 2.0, True])
def test_bad_in_channels(in_channels: object) -> None:
    with pytest.raises(ConfigError, match="in_channels must be a positive int"):
        build("conv1", in_channels=in_channels)  # type: ignore[arg-type]


def test_width_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        build("hog", 0.5)  # type: ignore[call-arg]
