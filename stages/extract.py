"""``invert extract FEATURE...``: an image store into feature stores."""

from __future__ import annotations

import dataclasses

import click

from pipeline import features
from pipeline.errors import ConfigError
from pipeline.extract import extract_stores, parse_extract_section
from pipeline.features.base import kernel_backend
from stages.common import (
    apply_runner_flags,
    device_option,
    images_option,
    out_option,
    params_option,
    read_section,
    reports_errors,
    runner_options,
)


class _ExtractCommand(click.Command):
    """``invert extract``, whose help ends with every extractor's parameters and defaults."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: list[tuple[str, str]] = []
        seen: set[str] = set()
        for name in features.names():  # imports each extractor (only for --help)
            ext = features.get(name)
            if ext.section in seen:
                continue
            seen.add(ext.section)
            defaults = ext.params_type()
            values = ", ".join(
                f"{f.name}: {getattr(defaults, f.name)!r}"
                for f in dataclasses.fields(ext.params_type)
            )
            rows.append((f"extract.{ext.section}", values))
        with formatter.section("Feature parameters (params file, with their defaults)"):
            formatter.write_dl(rows)


@click.command(cls=_ExtractCommand)
@click.argument("feature", nargs=-1, required=True)
@images_option("Image store made by `invert prepare`.")
@out_option(
    "Feature store to write (Zarr v3 folder); with several features a template "
    "containing {name}, e.g. cache/features/{name}.zarr.",
    kind="template",
)
@params_option
@device_option("networks; overrides extract.device")
@runner_options
@reports_errors
def extract(
    feature: tuple[str, ...],
    images_path: str,
    out: str,
    params_file: str,
    device: str | None,
    workers: int | None,
    scheduler: str | None,
    overwrite: bool,
    no_wait: bool,
) -> None:
    """Compute FEATURE for every image of an image store.

    FEATURE is a registered extractor (hog, lbp, sift, conv1 ... fc8) or a family (alexnet:
    the layers listed in extract.alexnet.layers). Several AlexNet layers are computed in one
    forward pass. Reads the `extract` section of the params file: `chunk_size`, `device`,
    `runner`, and the feature's subsection (`hog`, `sift`, `lbp`, `alexnet`) with the
    extractor's parameters (paper defaults where absent). Writes OUT with arrays features
    (N, C, h, w) or (N, C), valid, ids, labels, split; per-image failures are listed in its
    attrs. HOG and LBP run numba kernels where numba imports; the environment variable
    INVERT_KERNELS (auto | numba | numpy) forces one side (the same bytes either way).
    """
    section = read_section(params_file, "extract")
    kernel_backend()  # a bad INVERT_KERNELS fails here, before any image is read
    names: list[str] = []
    for f in feature:
        if f in features.FAMILIES:
            member = features.FAMILIES[f][0]
            _, family_params = parse_extract_section(section, member)
            names += list(getattr(family_params, "layers", features.FAMILIES[f]))
        else:
            features.get(f)  # unknown names fail before any work
            names.append(f)
    if not names:  # before names[0] below
        raise ConfigError(
            "no layers to extract: extract.alexnet.layers is empty; list at least one of "
            f"{', '.join(features.FAMILIES['alexnet'])}"
        )
    if len(names) > 1 and "{name}" not in out:
        raise click.UsageError(
            "several features need --out with {name}, e.g. cache/features/{name}.zarr"
        )
    try:
        outs = {name: out.format(name=name) for name in names}
    except (KeyError, IndexError, ValueError) as err:  # another {field}, or a lone brace
        raise click.BadParameter(
            f"{out!r} is not a path template ({type(err).__name__}: {err}); the only field it "
            "may hold is {name}, and a literal brace is written {{ or }}",
            param_hint="--out",
        ) from err
    if device is not None:
        section["device"] = device
    address = apply_runner_flags(section, "extract", workers, scheduler)
    run, params = parse_extract_section(section, names[0])
    paths = extract_stores(
        names,
        images_path,
        outs,
        params=params,
        run=run,
        overwrite=overwrite,
        wait=not no_wait,
        scheduler_address=address,
    )
    for name, path in paths.items():
        click.echo(f"feature store ready: {path}")
        if features.get(name).describe(params).get("random_weights"):
            click.echo(
                f"  note: {name} comes from a network with RANDOM weights "
                f"({params.weights}); it is not the paper's CaffeNet"
            )
