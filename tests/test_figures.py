"""Paper-style figures: real photographs in, PNGs whose cells are exactly those photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.figures import (
    CELL_PX,
    GAP_PX,
    dark_knowledge,
    fit_to_cell,
    interpolations,
    loss_curves,
    random_samples,
    reconstruction_grid,
    single_neurons,
)

CAPTION = "AlexNet with RANDOM weights (random:0); embedded default, 4 sample photographs"


def _resize(batch: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8: each photograph resized, as a decoder's output would be."""
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size))) for im in batch])


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB", im.mode
        return np.asarray(im)


def _contains(figure: np.ndarray, image: np.ndarray) -> bool:
    """Whether ``fit_to_cell(image)`` appears, pixel for pixel, somewhere in ``figure``."""
    cell = fit_to_cell(image).astype(np.int16)
    fig = figure.astype(np.int16)
    p = cell.shape[0]
    hits = np.argwhere(np.all(fig[: -p + 1, : -p + 1] == cell[0, 0], axis=-1))
    for y, x in hits[:20000]:
        if np.array_equal(fig[y + p - 1, x + p - 1], cell[-1, -1]) and np.array_equal(
            fig[y : y + p, x : x + p], cell
        ):
            return True
    return False


def _assert_paper_figure(path: Path) -> np.ndarray:
    """A white-background RGB PNG with content: returns its pixels (H, W, 3)."""
    assert path.is_file()
    pixels = _read(path)
    assert pixels.std() > 20, "figure is blank"
    # white margins all around, like a printed figure
    assert (pixels[:4] == 255).all() and (pixels[:, :4] == 255).all()
    assert (pixels[-4:] == 255).all() and (pixels[:, -4:] == 255).all()
    return pixels


@pytest.fixture(scope="module")
def photos(photo_batch: np.ndarray) -> np.ndarray:
    return photo_batch  # (4, 256, 256, 3) uint8: astronaut, coffee, chelsea, rocket


# ---------------------------------------------------------------------------------------
# reconstruction_grid: Fig. 1, 2, 5


def test_fig1_cells_are_the_images(photos: np.ndarray, tmp_path: Path) -> None:
    hog, sift, lbp = _resize(photos, 64), _resize(photos, 48), _resize(photos, 32)
    cols = [("Original", photos), ("HOG", hog), ("SIFT", sift), ("LBP", lbp)]
    out = reconstruction_grid(
        cols, tmp_path / "fig1.png", title="Figure 1: shallow features", caption=CAPTION
    )
    assert out == tmp_path / "fig1.png"
    pixels = _assert_paper_figure(out)
    h, w = pixels.shape[:2]
    assert 4 * CELL_PX < w < 4 * CELL_PX + 300
    assert 4 * CELL_PX < h < 4 * CELL_PX + 300
    for batch in (photos, hog, lbp):
        for image in (batch[0], batch[3]):
            assert _contains(pixels, image)


def test_mixed_sizes_shown_at_one_size(photos: np.ndarray, tmp_path: Path) -> None:
    """AlexNet layers decode to 216, 208, 192 and 128 pixels; every cell is CELL_PX."""
    sizes = {"CONV1": 216, "CONV2": 208, "CONV5": 192, "FC8": 128}
    cols = [("Original", photos)] + [(k, _resize(photos[:4], s)) for k, s in sizes.items()]
    out = reconstruction_grid(
        cols,
        tmp_path / "fig2.png",
        title="Figure 2",
        caption=CAPTION,
        row_labels=["astronaut", "coffee", "chelsea", "rocket"],
    )
    pixels = _assert_paper_figure(out)
    for _, batch in cols:
        assert _contains(pixels, batch[2])


def test_more_columns_make_a_wider_figure(photos: np.ndarray, tmp_path: Path) -> None:
    four = [("Original", photos), ("HOG", photos), ("SIFT", photos), ("LBP", photos)]
    eight = four + [(f"X{i}", photos) for i in range(4)]
    narrow = _read(reconstruction_grid(four, tmp_path / "a.png", title="t", caption=""))
    wide = _read(reconstruction_grid(eight, tmp_path / "b.png", title="t", caption=""))
    assert wide.shape[1] - narrow.shape[1] == 4 * (CELL_PX + GAP_PX)  # 4 more cells and gaps
    assert wide.shape[0] == narrow.shape[0]


def test_transpose_swaps_rows_and_columns(photos: np.ndarray, tmp_path: Path) -> None:
    """Fig. 5: one entry per method, its 4 layers laid out as a row."""
    methods = [("Ours", photos), ("M&V [1]", _resize(photos, 64)), ("Autoencoder", photos)]
    layers = ["CONV1", "CONV5", "FC6", "FC8"]
    plain = _read(
        reconstruction_grid(methods, tmp_path / "a.png", title="t", caption="", row_labels=layers)
    )
    flipped = _read(
        reconstruction_grid(
            methods, tmp_path / "b.png", title="t", caption="", row_labels=layers, transpose=True
        )
    )
    assert plain.shape[0] > plain.shape[1]  # 4 rows × 3 columns: portrait
    assert flipped.shape[1] > flipped.shape[0]  # 3 rows × 4 columns: landscape
    assert _contains(flipped, _resize(photos, 64)[3])


def test_same_input_same_bytes(photos: np.ndarray, tmp_path: Path) -> None:
    """Deterministic output: a rerun does not change a tracked figure."""
    cols = [("Original", photos[:2]), ("HOG", photos[:2])]
    a = reconstruction_grid(cols, tmp_path / "a.png", title="t", caption=CAPTION)
    b = reconstruction_grid(cols, tmp_path / "b.png", title="t", caption=CAPTION)
    assert a.read_bytes() == b.read_bytes()


def test_long_caption_wraps_inside_the_figure(photos: np.ndarray, tmp_path: Path) -> None:
    cols = [("Original", photos[:1])]
    short = _read(reconstruction_grid(cols, tmp_path / "a.png", title="t", caption="short"))
    long = _read(reconstruction_grid(cols, tmp_path / "b.png", title="t", caption=CAPTION * 6))
    assert long.shape[1] == short.shape[1]
    assert long.shape[0] > short.shape[0] + 50


def test_grid_rejects_mismatched_n(photos: np.ndarray, tmp_path: Path) -> None:
    cols = [("Original", photos), ("HOG", photos[:3])]
    with pytest.raises(ConfigError, match=r"column 'HOG' has 3 images but column 'Original' has 4"):
        reconstruction_grid(cols, tmp_path / "x.png", title="t", caption="")
    assert not (tmp_path / "x.png").exists()


def test_grid_rejects_float_images(photos: np.ndarray, tmp_path: Path) -> None:
    cols = [("Original", photos), ("HOG", photos / 255.0)]
    with pytest.raises(ConfigError, match=r"'HOG'.*uint8.*np.clip"):
        reconstruction_grid(cols, tmp_path / "x.png", title="t", caption="")


def test_grid_rejects_wrong_shape(photos: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\(N, H, W, 3\).*image\[None\]"):
        reconstruction_grid([("Original", photos[0])], tmp_path / "x.png", title="", caption="")
    with pytest.raises(ConfigError, match=r"\(N, H, W, 3\)"):
        reconstruction_grid([("Grey", photos[..., 0])], tmp_path / "x.png", title="", caption="")
    with pytest.raises(ConfigError, match="numpy array"):
        reconstruction_grid([("List", [photos[0]])], tmp_path / "x.png", title="", caption="")  # type: ignore[list-item]


def test_grid_rejects_empty_and_bad_labels(photos: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="columns is empty"):
        reconstruction_grid([], tmp_path / "x.png", title="", caption="")
    with pytest.raises(ConfigError, match="row_labels has 2 labels for 4 image"):
        reconstruction_grid(
            [("Original", photos)], tmp_path / "x.png", title="", caption="", row_labels=["a", "b"]
        )
    with pytest.raises(ConfigError, match=r"\.png"):
        reconstruction_grid([("Original", photos)], tmp_path / "x.jpg", title="", caption="")


# ---------------------------------------------------------------------------------------
# Fig. 3, 4, 6–10


def test_dark_knowledge(photos: np.ndarray, tmp_path: Path) -> None:
    small = _resize(photos, 128)
    out = dark_knowledge(photos, small, small[::-1], small, tmp_path / "fig3.png", caption="")
    pixels = _assert_paper_figure(out)
    assert _contains(pixels, photos[1]) and _contains(pixels, small[3])
    names = [["space shuttle", "missile", "projectile", "wing", "airliner"]] * 4
    labelled = _read(
        dark_knowledge(
            photos, small, small, small, tmp_path / "b.png", caption="", top5_labels=names
        )
    )
    assert labelled.shape[1] > pixels.shape[1] + 50  # the class names take a column
    assert labelled.shape[0] == pixels.shape[0]


def test_dark_knowledge_validates(photos: np.ndarray, tmp_path: Path) -> None:
    small = _resize(photos, 128)
    with pytest.raises(ConfigError, match="'Only top-5' has 2 images but 'Original' has 4"):
        dark_knowledge(photos, small, small[:2], small, tmp_path / "x.png", caption="")
    with pytest.raises(ConfigError, match="top5_labels has 1 entries for 4 images"):
        dark_knowledge(
            photos, small, small, small, tmp_path / "x.png", caption="", top5_labels=[["a"]]
        )
    with pytest.raises(ConfigError, match=r"top5_labels\[0\].*got a str"):
        dark_knowledge(
            photos, small, small, small, tmp_path / "x.png", caption="", top5_labels=["abcde"] * 4
        )


def test_single_neurons(photos: np.ndarray, tmp_path: Path) -> None:
    small = _resize(photos, 128)
    rows = [
        ("FC6", small, ["#12", "#407", "#1999", "#4001"]),
        ("FC7", small[:2], ["#3", "#77"]),  # rows may differ in length
        ("FC8", small[1:], ["espresso", "tabby, tabby cat, a rather long class name", "missile"]),
    ]
    pixels = _assert_paper_figure(single_neurons(rows, tmp_path / "fig4.png", caption=CAPTION))
    assert _contains(pixels, small[0]) and _contains(pixels, small[3])
    assert pixels.shape[0] > 3 * CELL_PX and pixels.shape[1] > 4 * CELL_PX


def test_single_neurons_validates(photos: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="row 'FC6' labels has 1 labels for 4 image"):
        single_neurons([("FC6", photos, ["#1"])], tmp_path / "x.png", caption="")
    with pytest.raises(ConfigError, match="rows is empty"):
        single_neurons([], tmp_path / "x.png", caption="")


def test_interpolations(photos: np.ndarray, tmp_path: Path) -> None:
    t = np.linspace(0.0, 1.0, 6)[:, None, None, None]
    blend = (photos[0] * (1 - t) + photos[2] * t).round().astype(np.uint8)  # (6, 256, 256, 3)
    rows = [("FC8 fixed", blend), ("FC8 autoencoder", _resize(blend, 128))]
    pixels = _assert_paper_figure(interpolations(rows, tmp_path / "fig6.png", caption=CAPTION))
    assert _contains(pixels, photos[0]) and _contains(pixels, photos[2])
    assert pixels.shape[1] > 6 * CELL_PX > pixels.shape[0]
    with pytest.raises(ConfigError, match="row 'FC6' has 1 image; an interpolation needs"):
        interpolations([("FC6", photos[:1])], tmp_path / "x.png", caption="")


def test_random_samples(photos: np.ndarray, tmp_path: Path) -> None:
    small = _resize(photos, 128)
    rows = [("FC6 histogram", small), ("FC6 truncated Gaussian", small[::-1][:3])]
    pixels = _assert_paper_figure(random_samples(rows, tmp_path / "fig8.png", caption=CAPTION))
    assert _contains(pixels, small[1])
    with pytest.raises(ConfigError, match="rows is empty"):
        random_samples([], tmp_path / "x.png", caption="")
    with pytest.raises(ConfigError, match=r"'FC7'.*uint8"):
        random_samples([("FC7", small.astype(np.float32))], tmp_path / "x.png", caption="")


def test_fit_to_cell_keeps_aspect() -> None:
    image = np.zeros((50, 100, 3), np.uint8)  # landscape, black
    cell = fit_to_cell(image, 40)
    assert cell.shape == (40, 40, 3) and cell.dtype == np.uint8
    assert (cell[:10] == 255).all() and (cell[-10:] == 255).all()  # white bands
    assert (cell[12:28] == 0).all()
    same = np.arange(40 * 40 * 3, dtype=np.uint8).reshape(40, 40, 3)
    assert np.array_equal(fit_to_cell(same, 40), same)  # right size: untouched


# ---------------------------------------------------------------------------------------
# loss curves


def test_loss_curves(tmp_path: Path) -> None:
    steps = np.arange(10, 410, 10)
    curves = {
        "hog": (steps, 0.09 * np.exp(-steps / 200) + 0.015),
        "fc8": (steps, 0.2 * np.exp(-steps / 100) + 0.05),
        # a diverged run: its NaN tail is left out, not an error
        "conv1": (steps, np.r_[0.1 * np.exp(-steps[:-3] / 300), [np.nan] * 3]),
    }
    pixels = _assert_paper_figure(loss_curves(curves, tmp_path / "loss.png", caption=CAPTION))
    # coloured lines drawn: some strongly saturated pixels
    saturation = pixels.max(axis=-1).astype(int) - pixels.min(axis=-1)
    assert (saturation > 100).sum() > 500


def test_loss_curves_validates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="curves is empty"):
        loss_curves({}, tmp_path / "x.png", caption="")
    with pytest.raises(ConfigError, match="same length"):
        loss_curves({"hog": (np.arange(3), np.ones(4))}, tmp_path / "x.png", caption="")
    with pytest.raises(ConfigError, match="no finite positive loss"):
        loss_curves({"hog": (np.arange(3), np.zeros(3))}, tmp_path / "x.png", caption="")
