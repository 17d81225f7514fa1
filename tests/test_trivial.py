"""The trivial baselines: the training-mean image and the nearest neighbour in feature space."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.trivial import nearest_neighbour, training_subset


def test_nearest_neighbour_takes_the_closest_training_target_across_batches() -> None:
    train = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [9.0, 9.0]])
    targets = np.arange(4, dtype=np.float32)[:, None, None, None] * np.ones((4, 2, 2, 3))
    test = np.array([[9.5, 8.0], [0.2, 0.1], [1.0, 4.0], [10.0, 1.0]])

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in (0, 3):  # two batches: [0, 1, 2] and [3]
            j = 3 if i == 0 else 4
            yield train[i:j], targets[i:j].astype(np.float32)

    got = nearest_neighbour(test, batches)
    # by hand: (9.5, 8) -> (9, 9) #3; (0.2, 0.1) -> origin #0; (1, 4) -> (0, 5) #2; (10, 1) -> #1
    assert [int(g[0, 0, 0]) for g in got] == [3, 0, 2, 1]


def test_training_subset_is_seeded_sorted_and_bounded() -> None:
    idx = np.arange(100, 200)
    a, b = training_subset(idx, 10, seed=0), training_subset(idx, 10, seed=0)
    assert np.array_equal(a, b) and len(a) == 10 and np.all(np.diff(a) > 0)
    assert set(a) <= set(idx) and not np.array_equal(a, training_subset(idx, 10, seed=1))
    assert np.array_equal(training_subset(idx, 500, seed=0), idx)


def test_evaluate_scores_the_trivial_baselines_on_the_same_images(
    image_store: Path, tmp_path: Path
) -> None:
    """metrics['mean_image'] against a plain numpy computation of the same thing."""
    from pipeline.evaluation import EvalParams, evaluate
    from pipeline.extract import extract_store
    from pipeline.loader import LoaderParams, usable_indices
    from pipeline.store import open_store
    from pipeline.training import TrainParams, train

    hog = extract_store("hog", image_store, tmp_path / "hog.zarr")
    params = TrainParams(
        width=0.125, steps=2, batch_size=4, eval_batches=0, loader=LoaderParams(workers=0)
    )
    model = train(
        "hog",
        images_path=image_store,
        features_path=hog,
        out=tmp_path / "m",
        checkpoints=tmp_path / "c",
        params=params,
        progress=False,
    ).model_path
    m = evaluate(
        model,
        images_path=image_store,
        features_path=hog,
        out=tmp_path / "r.zarr",
        params=EvalParams(device="cpu", baseline_images=10_000),  # every training image
    )
    images = open_store(image_store).array("images")[:].astype(np.float64) / 255.0
    train_idx, test_idx = usable_indices(image_store, "train"), usable_indices(image_store, "test")
    x = images[test_idx].reshape(len(test_idx), -1)
    mean = images[train_idx].mean(axis=0).reshape(1, -1)
    pairs = [np.linalg.norm(a - b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j]
    expected = np.linalg.norm(x - mean, axis=1).mean() / np.mean(pairs)
    assert abs(m["mean_image"] - expected) < 2e-3  # targets are stored as uint8
    assert m["images"] == len(test_idx) and 0 < m["nearest_neighbour"] < 2


def test_the_error_interval_brackets_the_error_and_narrows_with_n() -> None:
    from pipeline.evaluation import error_interval, normalised_error

    rng = np.random.default_rng(0)
    x = rng.random((60, 8, 8, 3))
    noise = rng.normal(0, 0.3, x.shape) * rng.random((60, 1, 1, 1)) * 2  # uneven per image
    low, high = error_interval(x, x + noise)
    assert low < normalised_error(x, x + noise) < high
    low8, high8 = error_interval(x[:8], (x + noise)[:8])
    assert high8 - low8 > high - low > 0
    # a fixed reference: the denominator does not move, only the reconstructions are drawn
    lo_r, hi_r = error_interval(x[:8], (x + noise)[:8], reference=x)
    assert lo_r < normalised_error(x[:8], (x + noise)[:8], reference=x) < hi_r
    assert error_interval(x, x) == (0.0, 0.0)
