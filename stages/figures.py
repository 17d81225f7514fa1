"""``invert figures``: the paper's figures from the pipeline's outputs."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import parse
from pipeline.paper import FigureInputs, FigureParams, make_figures
from stages.common import (
    images_option,
    out_option,
    params_option,
    path_template,
    read_section,
    reports_errors,
)


@click.command()
@images_option("Image store.")
@click.option(
    "--features",
    required=True,
    help=path_template(
        "AlexNet feature store of each layer, e.g. cache/features/alexnet/{name}.zarr."
    ),
)
@click.option(
    "--decoders",
    required=True,
    help=path_template("Trained decoder of each target, e.g. models/{name}/model.pt."),
)
@click.option(
    "--autoencoders",
    required=True,
    help=path_template("Trained autoencoder of each layer, e.g. models/ae_{name}/model.pt."),
)
@click.option(
    "--reconstructions",
    required=True,
    help=path_template(
        "The decoders' test reconstructions, e.g. cache/reconstructions/{name}.zarr."
    ),
)
@click.option(
    "--ae-reconstructions",
    required=True,
    help=path_template("The autoencoders' ones, e.g. cache/reconstructions/ae_{name}.zarr."),
)
@click.option(
    "--mv-reconstructions",
    required=True,
    help=path_template(
        "Those of the optimisation-based inversion [1] (`invert baseline`), e.g. "
        "cache/reconstructions/mv_{name}.zarr."
    ),
)
@click.option(
    "--ds-reconstructions",
    default=None,
    help=path_template(
        "Those of the decoders trained with the DeePSiM loss (`invert train --loss "
        "deepsim`), e.g. cache/reconstructions/ds_{name}.zarr; without it, no "
        "fig9_deepsim.png."
    ),
)
@out_option("Figure folder.")
@params_option
@reports_errors
def figures(
    images_path: str,
    features: str,
    decoders: str,
    autoencoders: str,
    reconstructions: str,
    ae_reconstructions: str,
    mv_reconstructions: str,
    ds_reconstructions: str | None,
    out: str,
    params_file: str,
) -> None:
    """Render the paper's figures (docs/method.md §6) from the pipeline's outputs.

    Reads the `figures` section of the params file. A target whose model, store or
    reconstructions do not exist is left out. Writes, each where its inputs exist:
    fig1_shallow.png (Fig. 1), fig2_alexnet.png (Fig. 2), fig3_dark_knowledge.png,
    fig4_single_neurons.png, fig5_methods.png (ours vs [1] vs autoencoder),
    fig6_interpolation.png, fig7_interpolation_ae.png, fig8_random_features.png (the
    paper's Figs. 8–10 in one) and, beyond the paper, fig9_deepsim.png (pixel loss vs
    DeePSiM), plus captions.json (each figure's caption, which the report
    shows) and same_images.json (the decoders scored on exactly [1]'s images).
    """
    params = parse(FigureParams, read_section(params_file, "figures"), section="figures")
    inputs = FigureInputs(
        images=Path(images_path),
        features=features,
        decoders=decoders,
        autoencoders=autoencoders,
        reconstructions=reconstructions,
        ae_reconstructions=ae_reconstructions,
        mv_reconstructions=mv_reconstructions,
        ds_reconstructions=ds_reconstructions,
    )
    for _, path in make_figures(inputs=inputs, out=out, params=params):
        click.echo(f"figure: {path}")
