"""Image sources and the image store (``invert prepare``), docs/method.md §1.

A source is listed into :class:`ImageRecord` rows (id, where the pixels come from, split,
label), then shard tasks decode, convert and resize each image to ``size × size`` RGB uint8
(shorter side resized to ``size``, centre crop) and write the store:

=========  =======================  ===========================================
array      shape / dtype            meaning
=========  =======================  ===========================================
images     (N, 256, 256, 3) uint8   RGB pixels
valid      (N,) uint8               0 where the file was skipped (pixels zero)
ids        (N,) str                 stable id (relative path, or photo/split/n)
paths      (N,) str                 where the pixels came from
labels     (N,) int32               class index, -1 where unknown
split      (N,) uint8               index into attrs ``splits`` (train, test)
=========  =======================  ===========================================

Sources:

- ``sample`` — the embedded default: the colour photographs shipped inside scikit-image
  (``skimage.data``), split train/test by photograph, with a deterministic set of random
  crops, scales and flips so the demo has a few thousand training samples;
- ``dir:PATH`` — every file under ``PATH`` (recursive, sorted), split by a hash of the id;
- ``imagenet:PATH`` — ``PATH/train/<wnid>/*`` and ``PATH/val`` (``val/<wnid>/*`` or flat
  ``val/*`` with ``PATH/LOC_val_solution.csv``), labels = index of the sorted wnids;
- ``list:FILE`` — one image path a line (relative to the file's folder), ``#`` comments.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import collages
from pipeline.config import as_dict
from pipeline.errors import BadImageError, ConfigError, ImageSourceError
from pipeline.runner import RunnerParams, run_shards
from pipeline.store import (
    ArraySpec,
    StoreWriter,
    combine_hashes,
    content_digest,
    identity_of,
    write_shard,
)

__all__ = [
    "SAMPLE_PHOTOS",
    "SPLITS",
    "ImageRecord",
    "PrepareParams",
    "list_records",
    "load_image",
    "photo_crops",
    "prepare",
    "resize_center_crop",
]

log = logging.getLogger(__name__)

#: Split codes of the ``split`` array.
SPLITS = ("train", "test")

#: Version of the rendering (decode, convert, crop, flip, resize): bumped whenever the pixels
#: rendered from the same source record change. Part of every image store's provenance, and
#: ``tests/test_golden.py`` fails on a change of rendered pixels without a bump.
RENDER_VERSION = 1

#: Photographs inside the dependencies (no download): scikit-image's colour and grey sample
#: photographs, matplotlib's portrait of Grace Hopper, scikit-learn's two sample photographs
#: and PyWavelets' two grey ones; name -> (where, index), where ``where`` is a
#: ``skimage.data`` function or ``PACKAGE:FILE`` inside an installed package (read as a file,
#: the package is not imported). Grey ones are used as grey RGB (edges and textures the
#: colour ones lack). The two stereo_motorcycle views are one source photograph, so they
#: always land in the same split.
SAMPLE_PHOTOS: dict[str, tuple[str, int | None]] = {
    "astronaut": ("astronaut", None),
    "chelsea": ("chelsea", None),
    "coffee": ("coffee", None),
    "hubble_deep_field": ("hubble_deep_field", None),
    "immunohistochemistry": ("immunohistochemistry", None),
    "retina": ("retina", None),
    "rocket": ("rocket", None),
    "motorcycle_left": ("stereo_motorcycle", 0),
    "motorcycle_right": ("stereo_motorcycle", 1),
    "grace_hopper": ("matplotlib:mpl-data/sample_data/grace_hopper.jpg", None),
    "camera": ("camera", None),
    "coins": ("coins", None),
    "moon": ("moon", None),
    "grass": ("grass", None),
    "gravel": ("gravel", None),
    "brick": ("brick", None),
    "page": ("page", None),
    "text": ("text", None),
    "cell": ("cell", None),
    "clock": ("clock", None),
    "china": ("sklearn:datasets/images/china.jpg", None),
    "flower": ("sklearn:datasets/images/flower.jpg", None),
    "aero": ("pywt:data/aero.npz", None),
    "ascent": ("pywt:data/ascent.npz", None),
}


@dataclass(frozen=True)
class PrepareParams:
    """The ``prepare`` section of ``params.yaml``.

    Attributes
    ----------
    size : int
        Side of the stored square images (docs/method.md §1: 256).
    limit : int or None
        Keep only the first ``limit`` records (quick runs).
    train_samples, test_samples : int
        ``sample`` source: crops drawn from the training / test photographs.
    collages : int
        ``sample`` source: training images that are dead-leaves collages of the training
        photographs (:mod:`pipeline.collages`), after the ``train_samples`` crops; 0 (the
        paper: photographs only) for none.
    test_photos : tuple of str
        ``sample`` source: photographs of the test split (names of ``SAMPLE_PHOTOS``).
    holdout_photos : tuple of str
        ``sample`` source: photographs in neither split, kept for scoring decoders on new
        photographs (``invert score --images sample:NAME,...``).
    crop_scale : tuple of float
        ``sample`` source: side of a random crop as a fraction of the photo's shorter side.
    test_fraction : float
        ``dir`` / ``list`` sources: share of the images put in the test split (by hash of id).
    min_size : int
        Images whose shorter side is below this are skipped (upscaling them would invent
        most of the pixels).
    seed : int
        Seed of the crops and of the hash split.
    shard_size, chunk_size : int
        Samples per shard file and per inner chunk (see :mod:`pipeline.store`). Each
        chunk carries one crc32c; with 1 (the default) the training loader checks every
        image on the copy it hands out (:mod:`pipeline.loader`).
    strict : bool
        Make a skipped file an error naming it.
    """

    size: int = 256
    limit: int | None = None
    train_samples: int = 2048
    test_samples: int = 64
    collages: int = 0
    test_photos: tuple[str, ...] = ("astronaut", "coffee", "chelsea")
    holdout_photos: tuple[str, ...] = ("grace_hopper", "camera")
    crop_scale: tuple[float, float] = (0.3, 1.0)
    test_fraction: float = 0.02
    min_size: int = 32
    seed: int = 0
    shard_size: int = 256
    chunk_size: int = 1
    strict: bool = False
    runner: RunnerParams = field(default_factory=RunnerParams)

    def __post_init__(self) -> None:
        for key in ("test_photos", "holdout_photos"):
            unknown = [p for p in getattr(self, key) if p not in SAMPLE_PHOTOS]
            if unknown:
                raise ConfigError(
                    f"{key} {unknown} are not sample photographs; choose from "
                    f"{', '.join(SAMPLE_PHOTOS)}"
                )
        both = sorted(set(self.test_photos) & set(self.holdout_photos))
        if both:
            raise ConfigError(f"{both} are in both test_photos and holdout_photos; choose one")
        for group in (self.test_photos, self.holdout_photos):
            for name in group:  # views of one photograph (motorcycle_left/right) stay together
                where = SAMPLE_PHOTOS[name][0]
                views = [n for n, (w, _) in SAMPLE_PHOTOS.items() if w == where]
                if not set(views) <= set(group):
                    raise ConfigError(
                        f"{views} are views of one photograph: list all of them in the same "
                        "group (test_photos or holdout_photos), or none"
                    )
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(
                f"crop_scale must be [low, high] with 0 < low <= high <= 1, got {self.crop_scale}"
            )
        if self.size < 8 or self.min_size < 1:
            raise ConfigError("size must be >= 8 and min_size >= 1")
        if self.shard_size < 1 or self.chunk_size < 1 or self.shard_size % self.chunk_size:
            raise ConfigError(
                f"shard_size ({self.shard_size}) must be a positive multiple of chunk_size "
                f"({self.chunk_size})"
            )
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be a positive integer or null, got {self.limit}")
        if self.collages < 0:
            raise ConfigError(f"collages must be >= 0, got {self.collages}")


@dataclass(frozen=True)
class ImageRecord:
    """One sample of an image source.

    Attributes
    ----------
    id : str
        Stable identifier (relative path, or ``photo/split/n`` for the sample source).
    path : str
        File path, ``skimage:NAME`` for a sample photograph, or ``collage:SEED:NAME,...``
        for a collage of sample photographs (:func:`pipeline.collages.collage_path`).
    split : str
        ``"train"`` or ``"test"``.
    label : int
        Class index, -1 where unknown.
    crop : tuple of float or None
        ``(top, left, side)`` in pixels of the photo to cut before resizing (sample source).
    flip : bool
        Mirror horizontally (sample source).
    """

    id: str
    path: str
    split: str
    label: int = -1
    crop: tuple[float, float, float] | None = None
    flip: bool = False


# -- decoding -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=len(SAMPLE_PHOTOS))
def _sample_photo(name: str) -> np.ndarray:
    where, index = SAMPLE_PHOTOS[name]
    package, _, relative = where.rpartition(":")
    if package:
        data = _package_photo(package, relative)
    else:
        import skimage.data

        data = getattr(skimage.data, where)()
    arr = np.asarray(data[index] if index is not None else data)
    if arr.ndim == 2:  # a grey photograph: grey RGB
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr)


def _package_photo(package: str, relative: str) -> np.ndarray:
    """A photograph file inside an installed package, found without importing the package.

    Parameters
    ----------
    package : str
        Import name of the package (``matplotlib``, ``sklearn``, ``pywt``).
    relative : str
        Path of the file inside the package (``.npz`` files hold one array, ``data``).

    Returns
    -------
    numpy.ndarray
        (H, W, 3) or (H, W) uint8.
    """
    import importlib.util

    from PIL import Image

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImageSourceError(
            f"sample photographs need the {package!r} package; install it: pip install -e ."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return np.asarray(archive["data"])
    with Image.open(path) as opened:
        return np.asarray(opened.convert("RGB"))


def load_image(path: str | Path, *, min_size: int = 1) -> tuple[np.ndarray, str | None]:
    """Decode an image file to RGB uint8, converting where that is sound.

    Parameters
    ----------
    path : str or Path
        An image file, or ``skimage:NAME`` for a sample photograph.
    min_size : int
        Smallest acceptable shorter side in pixels.

    Returns
    -------
    image : (H, W, 3) ndarray of uint8
    conversion : str or None
        What was converted (``"grey -> RGB"``, ``"CMYK -> RGB"``, ``"16-bit -> 8-bit"``,
        ``"alpha composited on white"``), ``None`` for a plain 8-bit RGB file.

    Raises
    ------
    BadImageError
        Zero-byte, truncated, undecodable or too small files, with the reason.
    """
    path = str(path)
    if path.startswith("skimage:"):
        return _sample_photo(path.split(":", 1)[1]), None
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise BadImageError("not a file")
    if p.stat().st_size == 0:
        raise BadImageError("empty file (0 bytes)")
    conversion: str | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as opened:
                opened.load()  # decodes everything: a truncated file raises here
                im = ImageOps.exif_transpose(opened) or opened
                im.load()
    except UnidentifiedImageError:
        raise BadImageError("not an image file (unknown format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise BadImageError(f"cannot decode: {err}") from None
    mode = im.mode
    if mode == "RGB":
        arr = np.asarray(im)
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA")).astype(np.float32)
        alpha = rgba[..., 3:4] / 255.0
        arr = np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        conversion = "alpha composited on white"
    elif mode.startswith("I") or mode == "F":
        raw = np.asarray(im).astype(np.float64)
        if mode == "F":
            raise BadImageError("floating-point image: no sound conversion to 8 bits")
        top = 65535.0 if raw.max() > 255 else 255.0
        grey = np.clip(np.round(raw / top * 255.0), 0, 255).astype(np.uint8)
        arr = np.repeat(grey[..., None], 3, axis=2)
        conversion = "16-bit grey -> 8-bit RGB"
    elif mode in ("L", "1", "P"):
        arr = np.asarray(im.convert("RGB"))
        conversion = "grey -> RGB" if mode != "P" else "palette -> RGB"
    else:  # CMYK, YCbCr, LAB, HSV
        arr = np.asarray(im.convert("RGB"))
        conversion = f"{mode} -> RGB"
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise BadImageError(f"unexpected decoded shape {arr.shape}")
    if min(arr.shape[:2]) < min_size:
        raise BadImageError(
            f"too small: {arr.shape[1]}x{arr.shape[0]} px, shorter side < {min_size}"
        )
    return np.ascontiguousarray(arr), conversion


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` and cut the central ``size × size`` square.

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8
    size : int

    Returns
    -------
    (size, size, 3) ndarray of uint8

    Notes
    -----
    Area interpolation when shrinking (anti-aliased), bicubic when enlarging.
    """
    import cv2

    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(resized[top : top + size, left : left + size])


def _render(record: ImageRecord, size: int, min_size: int) -> tuple[np.ndarray, str | None]:
    made = collages.parse_collage_path(record.path)
    if made is not None:
        seed, names = made
        photos = [_sample_photo(n) for n in names]
        return collages.collage(photos, seed, size, resize=resize_center_crop), None
    image, conversion = load_image(record.path, min_size=min_size)
    if record.crop is not None:
        top, left, side = (round(v) for v in record.crop)
        image = image[top : top + side, left : left + side]
    if record.flip:
        image = image[:, ::-1]
    return resize_center_crop(image, size), conversion


# -- listing sources ----------------------------------------------------------------------
def _hash_unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def _sample_records(params: PrepareParams) -> list[ImageRecord]:
    rng = np.random.default_rng(params.seed)
    test = [p for p in SAMPLE_PHOTOS if p in params.test_photos]
    train = [p for p in SAMPLE_PHOTOS if p not in params.test_photos + params.holdout_photos]
    shapes = {name: _sample_photo(name).shape[:2] for name in SAMPLE_PHOTOS}
    records: list[ImageRecord] = []
    for split, photos, count in (
        ("train", train, params.train_samples),
        ("test", test, params.test_samples),
    ):
        if count and not photos:
            raise ConfigError(
                f"no sample photographs left for the {split} split; change test_photos"
            )
        for i in range(count):
            name = photos[i % len(photos)]
            h, w = shapes[name]
            short = min(h, w)
            if split == "test" and i < len(photos):
                side = float(short)  # the whole photo (centre crop) comes first
                top, left, flip = (h - short) / 2, (w - short) / 2, False
            else:
                side = float(rng.uniform(*params.crop_scale) * short)
                top = float(rng.uniform(0, h - side))
                left = float(rng.uniform(0, w - side))
                flip = bool(rng.random() < 0.5) if split == "train" else False
            records.append(
                ImageRecord(
                    f"{name}/{split}/{i:05d}",
                    f"skimage:{name}",
                    split,
                    crop=(top, left, side),
                    flip=flip,
                )
            )
    for i in range(params.collages):  # after every crop: the crops' records do not move
        seed = int(np.random.default_rng([params.seed, i]).integers(2**31))
        path = collages.collage_path(seed, train)
        records.append(ImageRecord(f"collage/train/{i:05d}", path, "train"))
    return records


def _hash_split(ids: Sequence[str], params: PrepareParams) -> list[str]:
    return ["test" if _hash_unit(params.seed, i) < params.test_fraction else "train" for i in ids]


def _dir_records(root: Path, params: PrepareParams) -> list[ImageRecord]:
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    ids = [p.relative_to(root).as_posix() for p in files]
    splits = _hash_split(ids, params)
    return [ImageRecord(i, str(p), s) for i, p, s in zip(ids, files, splits)]


def _list_records(listing: Path, params: PrepareParams) -> list[ImageRecord]:
    entries = []
    for line in listing.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line)
    paths = [Path(e) if Path(e).is_absolute() else listing.parent / e for e in entries]
    splits = _hash_split(entries, params)
    return [ImageRecord(e, str(p), s) for e, p, s in zip(entries, paths, splits)]


def _imagenet_records(root: Path) -> tuple[list[ImageRecord], list[str]]:
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise ImageSourceError(
            f"{str(root)!r} is not an ImageNet-layout folder: {str(train_dir)!r} is missing "
            "(expected train/<wnid>/*.JPEG and val/)"
        )
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    index = {wnid: k for k, wnid in enumerate(classes)}
    records = [
        ImageRecord(f.relative_to(root).as_posix(), str(f), "train", index[wnid])
        for wnid in classes
        for f in sorted((train_dir / wnid).iterdir())
        if f.is_file()
    ]
    val = root / "val"
    if val.is_dir():
        subdirs = sorted(p for p in val.iterdir() if p.is_dir())
        if subdirs:
            for d in subdirs:
                label = index.get(d.name, -1)
                records += [
                    ImageRecord(f.relative_to(root).as_posix(), str(f), "test", label)
                    for f in sorted(d.iterdir())
                    if f.is_file()
                ]
        else:
            labels: dict[str, int] = {}
            solution = root / "LOC_val_solution.csv"
            if solution.is_file():
                for line in solution.read_text().splitlines()[1:]:
                    image_id, pred = line.split(",", 1)
                    labels[image_id] = index.get(pred.split()[0], -1) if pred.strip() else -1
            else:
                log.warning("no %s: validation labels unknown (-1)", solution)
            records += [
                ImageRecord(f.relative_to(root).as_posix(), str(f), "test", labels.get(f.stem, -1))
                for f in sorted(val.iterdir())
                if f.is_file()
            ]
    return records, classes


#: source kinds that take a path after the colon
_PATH_KINDS = ("dir", "imagenet", "list")


def resolve_source(source: str) -> str:
    """A source as ``kind:PATH``: a plain existing folder is ``dir:``, a ``.txt`` ``list:``.

    ``sample`` and explicit prefixes are kept; a prefix settles the ambiguous cases (a folder
    named ``sample``: ``dir:sample``; an ImageNet tree: ``imagenet:PATH``).
    """
    kind, sep, _ = source.partition(":")
    if source == "sample" or (sep and kind in _PATH_KINDS):
        return source
    path = Path(source)
    if path.is_dir():
        return f"dir:{source}"
    if path.is_file() and path.suffix == ".txt":
        return f"list:{source}"
    return source


def list_records(source: str, params: PrepareParams) -> tuple[list[ImageRecord], dict[str, Any]]:
    """List the samples of an image source.

    Parameters
    ----------
    source : str
        ``sample``, ``dir:PATH``, ``imagenet:PATH`` or ``list:FILE``.
    params : PrepareParams

    Returns
    -------
    records : list of ImageRecord
    info : dict
        ``kind``, ``path`` and, for ImageNet, ``classes`` (the wnids in label order).

    Raises
    ------
    ImageSourceError
        Unknown source kind, a missing path, or a source with no files.
    """
    source = resolve_source(source)
    kind, _, arg = source.partition(":")
    info: dict[str, Any] = {"kind": kind, "path": arg or None}
    if kind == "sample":
        records = _sample_records(params)
        from importlib.metadata import version

        info["skimage_version"] = version("scikit-image")
    elif kind in ("dir", "imagenet", "list"):
        if params.collages:
            raise ConfigError(
                f"prepare.collages ({params.collages}) makes collages of the sample "
                f"photographs; set it to 0 for the {kind!r} source"
            )
        if not arg:
            raise ImageSourceError(f"source {kind!r} needs a path: --source {kind}:PATH")
        path = Path(arg)
        if not path.exists():
            raise ImageSourceError(f"image source {str(path)!r} does not exist; check the path")
        if kind == "dir":
            if not path.is_dir():
                raise ImageSourceError(
                    f"{str(path)!r} is not a folder; use list:{path} for a text file of paths"
                )
            records = _dir_records(path, params)
        elif kind == "list":
            records = _list_records(path, params)
        else:
            records, info["classes"] = _imagenet_records(path)
    else:
        raise ImageSourceError(
            f"unknown image source {source!r}: not an existing folder or .txt file; use "
            "sample, a folder (or dir:PATH), imagenet:PATH, or a .txt list of files (list:FILE)"
        )
    if params.limit is not None:
        records = _limit(records, params.limit)
    if not records:
        raise ImageSourceError(f"image source {source!r} holds no images; check the path")
    return records, info


def photo_crops(
    source: str,
    *,
    crops: int,
    size: int = 256,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    seed: int = 0,
) -> tuple[list[str], np.ndarray]:
    """Images to score decoders on, from photographs the user brings.

    Parameters
    ----------
    source : str
        A folder of images (or ``dir:PATH``), a ``.txt`` list of files (``list:FILE``), or
        ``sample:NAME,NAME`` for photographs of :data:`SAMPLE_PHOTOS` (e.g. the embedded
        default's ``holdout_photos``).
    crops : int
        Random square crops per photograph after its centre square (0: the centre only).
    size : int
        Side of the images.
    crop_scale : tuple of float
        Side of a random crop as a fraction of the photograph's shorter side.
    seed : int
        Seed of the crop positions (per photograph, so adding a photograph leaves the
        others' crops unchanged).

    Returns
    -------
    ids : list of str
        ``photo#k`` per image, ``k = 0`` the centre square.
    images : (N, size, size, 3) ndarray of uint8

    Raises
    ------
    ImageSourceError
        No usable photograph (with each skipped file's reason).
    """
    kind, _, arg = resolve_source(source).partition(":")
    if kind == "sample":
        names = [n.strip() for n in arg.split(",") if n.strip()]
        unknown = [n for n in names if n not in SAMPLE_PHOTOS]
        if not names or unknown:
            raise ImageSourceError(
                f"sample:{arg} names no sample photograph {unknown or ''}; choose from "
                f"{', '.join(SAMPLE_PHOTOS)}"
            )
        paths = [(n, f"skimage:{n}") for n in names]
    elif kind not in ("dir", "list", "imagenet"):
        raise ImageSourceError(
            f"no photographs at {source!r}: not an existing folder or .txt file; give a folder "
            "of photographs (or dir:PATH), a .txt list of files (or list:FILE), or "
            "sample:NAME,NAME (invert score also takes holdout: prepare.holdout_photos)"
        )
    else:
        records, _ = list_records(source, PrepareParams(test_fraction=0.0))
        paths = [(r.id, r.path) for r in records]
    ids: list[str] = []
    out: list[np.ndarray] = []
    skipped: list[str] = []
    for name, path in paths:
        try:
            photo, _ = load_image(path, min_size=32)
        except BadImageError as err:
            skipped.append(f"{name}: {err}")
            continue
        h, w = photo.shape[:2]
        short = min(h, w)
        rng = np.random.default_rng([seed, int(_hash_unit(seed, name) * 2**32)])
        for k in range(crops + 1):
            if k == 0:
                side, top, left = short, (h - short) // 2, (w - short) // 2
            else:
                side = round(rng.uniform(*crop_scale) * short)
                top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            ids.append(f"{name}#{k}")
            out.append(resize_center_crop(photo[top : top + side, left : left + side], size))
    if not out:
        raise ImageSourceError(
            f"no usable photograph in {source!r}: " + ("; ".join(skipped) or "no image files")
        )
    for line in skipped:
        log.warning("skipped %s", line)
    return ids, np.stack(out)


def _limit(records: list[ImageRecord], limit: int) -> list[ImageRecord]:
    """The first ``limit`` records, taken from each split in proportion to its size."""
    if limit >= len(records):
        return records
    by_split = {s: [r for r in records if r.split == s] for s in SPLITS}
    take = {s: round(limit * len(rs) / len(records)) for s, rs in by_split.items()}
    for s, rs in by_split.items():  # keep at least one of each split that has any
        if rs and take[s] == 0:
            other = max(take, key=lambda k: take[k])
            take[s], take[other] = 1, take[other] - 1
    keep = {id(r) for s, rs in by_split.items() for r in rs[: take[s]]}
    return [r for r in records if id(r) in keep]


def _source_fingerprint(records: Sequence[ImageRecord], info: dict[str, Any]) -> str:
    """Cheap fingerprint of what the source will produce: ids, crops, file sizes and times."""
    h = hashlib.sha256(repr(sorted(info.items())).encode())
    for r in records:
        h.update(repr((r.id, r.split, r.label, r.crop, r.flip)).encode())
        if not r.path.startswith(("skimage:", "collage:")):  # files only
            try:
                st = Path(r.path).stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(b"missing")
    return h.hexdigest()


# -- the stage ------------------------------------------------------------------------------
def _prepare_shard(
    index: int,
    *,
    scratch: str,
    records: list[tuple[str, str, str, int, Any, bool]],
    start: int,
    size: int,
    min_size: int,
    strict: bool,
) -> dict[str, Any]:
    """Task: decode one shard's records and write its images (runs in a Dask worker)."""
    n = len(records)
    images = np.zeros((n, size, size, 3), np.uint8)
    valid = np.zeros((n,), np.uint8)
    skipped, converted = [], []
    for k, fields in enumerate(records):
        record = ImageRecord(*fields)
        try:
            images[k], conversion = _render(record, size, min_size)
            valid[k] = 1
            if conversion:
                converted.append({"index": start + k, "id": record.id, "conversion": conversion})
        except BadImageError as err:
            if strict:
                raise ImageSourceError(
                    f"{record.path}: {err} (--strict; drop --strict to skip and list such files)"
                ) from None
            skipped.append(
                {"index": start + k, "id": record.id, "path": record.path, "reason": str(err)}
            )
    digest = content_digest(images, valid)
    write_shard(
        scratch,
        index,
        {"images": images, "valid": valid},
        {"skipped": skipped, "converted": converted, "hash": digest},
    )
    return {"skipped": len(skipped)}


def prepare(
    source: str,
    out: str | Path,
    params: PrepareParams,
    *,
    overwrite: bool = False,
    wait: bool = True,
    scheduler_address: str | None = None,
) -> Path:
    """Build (or finish, or confirm up to date) the image store ``out`` from ``source``.

    Parameters
    ----------
    source : str
        ``sample``, ``dir:PATH``, ``imagenet:PATH`` or ``list:FILE``.
    out : str or Path
        The image store to write.
    params : PrepareParams
    overwrite, wait : bool
        See :class:`pipeline.store.StoreWriter`.
    scheduler_address : str, optional
        A ``dask.distributed`` scheduler to run the decode tasks on.

    Returns
    -------
    Path
        The complete store.
    """
    source = resolve_source(source)
    records, info = list_records(source, params)
    n = len(records)
    provenance = {
        "kind": "images",
        "stage": "prepare",
        "version": RENDER_VERSION,
        "producer": info["kind"],
        "source": source,
        "params": {k: v for k, v in as_dict(params).items() if k not in ("runner", "strict")},
        "input_fingerprint": _source_fingerprint(records, info),
        "dims": ["sample", "y", "x", "rgb"],
    }
    arrays = [
        ArraySpec(
            "images",
            (n, params.size, params.size, 3),
            "uint8",
            params.chunk_size,
            params.shard_size,
            ("sample", "y", "x", "rgb"),
            # photographs: lz4 packs them to only 94% (zstd 78%, at 4x lz4's read time);
            # raw chunks are read as views of the mapped file (every extraction, every epoch)
            codec="raw",
        ),
        ArraySpec("valid", (n,), "uint8", params.shard_size, params.shard_size, ("sample",)),
        ArraySpec("ids", (n,), "str", n, None, ("sample",)),
        ArraySpec("paths", (n,), "str", n, None, ("sample",)),
        ArraySpec("labels", (n,), "int32", n, None, ("sample",)),
        ArraySpec("split", (n,), "uint8", n, None, ("sample",)),
    ]
    with StoreWriter(out, provenance, arrays, overwrite=overwrite, wait=wait) as writer:
        if writer.up_to_date:
            log.info("%s is up to date", writer.out)
            return writer.out
        pending = writer.pending_shards()
        log.info("prepare: %d images, %d shards (%d to do)", n, writer.num_shards, len(pending))
        plain = [(r.id, r.path, r.split, r.label, r.crop, r.flip) for r in records]
        _run_prepare(writer, pending, plain, params, scheduler_address)
        meta = writer.shard_meta()
        skipped = [s for m in meta for s in m["skipped"]]
        converted = [c for m in meta for c in m["converted"]]
        for s in skipped:
            log.warning("skipped %s: %s", s["path"], s["reason"])
        writer.write_small("ids", np.array([r.id for r in records], dtype=object))
        writer.write_small("paths", np.array([r.path for r in records], dtype=object))
        writer.write_small("labels", np.array([r.label for r in records], dtype=np.int32))
        writer.write_small("split", np.array([SPLITS.index(r.split) for r in records], np.uint8))
        counts: dict[str, int] = {}
        for c in converted:
            counts[c["conversion"]] = counts.get(c["conversion"], 0) + 1
        fingerprint = combine_hashes([m["hash"] for m in meta])
        attrs = {
            "source": info,
            "splits": list(SPLITS),
            "split_counts": {s: sum(r.split == s for r in records) for s in SPLITS},
            "skipped": skipped,
            "conversions": counts,
            "num_valid": n - len(skipped),
        }
        if info.get("classes") is not None:
            attrs["classes"] = info.pop("classes")
        if not attrs["num_valid"]:
            reasons = "\n  ".join(f"{x['path']}: {x['reason']}" for x in skipped[:10])
            raise ImageSourceError(
                f"no usable image in {source!r}: all {n} files were skipped:\n  {reasons}"
                + (f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else "")
                + "\nfix or replace the files (their decoded shards are kept for a rerun)"
            )
        return writer.finalize(fingerprint=identity_of({"content": fingerprint}), attrs=attrs)


def _run_prepare(
    writer: StoreWriter,
    pending: list[int],
    plain: list[tuple[str, str, str, int, Any, bool]],
    params: PrepareParams,
    scheduler_address: str | None,
) -> None:
    """Run one decode task per pending shard, each given only its own records."""
    shared = {
        "scratch": str(writer.scratch),
        "size": params.size,
        "min_size": params.min_size,
        "strict": params.strict,
    }
    tasks = {}
    for i in pending:
        start, stop = writer.shard_bounds(i)
        tasks[i] = {**shared, "records": plain[start:stop], "start": start}
    run_shards(
        _prepare_shard,
        tasks,
        runner=params.runner,
        scheduler_address=scheduler_address,
        desc="prepare",
    )
