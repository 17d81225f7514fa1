"""``invert figures`` and ``invert report``: the paper's figures and the HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml

from pipeline.config import parse
from pipeline.paper import FigureParams, make_figures, make_report
from pipeline.report import ReportParams
from pipeline.store import open_store
from stages.common import params_option, read_section, reports_errors


@click.command()
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Image store.")
@click.option(
    "--features",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder of the feature stores (NAME.zarr, alexnet/LAYER.zarr).",
)
@click.option(
    "--models",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder of the trained models (T/model.pt, ae_T/model.pt).",
)
@click.option(
    "--reconstructions",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder of the reconstruction stores (T.zarr, ae_T.zarr, mv_T.zarr).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Figure folder.")
@params_option
@reports_errors
def figures(
    images: str, features: str, models: str, reconstructions: str, out: str, params_file: str
) -> None:
    """Render the paper's figures (docs/method.md §6) from the pipeline's outputs.

    Reads the `figures` section of the params file. Writes, each where its inputs exist:
    fig1_shallow.png (Fig. 1), fig2_alexnet.png (Fig. 2), fig3_dark_knowledge.png,
    fig4_single_neurons.png, fig5_methods.png (ours vs [1] vs autoencoder),
    fig6_interpolation.png, fig7_interpolation_ae.png, and fig8_random_features.png (the
    paper's Figs. 8–10 in one), plus captions.json (each figure's caption, which the report
    shows).
    """
    params = parse(FigureParams, read_section(params_file, "figures"), section="figures")
    made = make_figures(
        images=images,
        features=features,
        models=models,
        reconstructions=reconstructions,
        out=out,
        params=params,
    )
    for _, path in made:
        click.echo(f"figure: {path}")


def _provenance(images: str, features: str, params_file: str) -> dict[str, Any]:
    prov: dict[str, Any] = {}
    store = open_store(images)
    prov["data"] = store.attrs.get("source", {}).get("kind")
    prov["images"] = {
        "source": store.provenance.get("source"),
        "samples": len(store),
        "split_counts": store.attrs.get("split_counts"),
    }
    conv = Path(features) / "alexnet" / "conv1.zarr"
    if conv.exists():
        p = open_store(conv).provenance
        prov["alexnet"] = {
            "params": p.get("params"),
            "weights": p.get("weights"),
            "random_weights": p.get("random_weights"),
        }
    if Path(params_file).is_file():
        prov["params"] = yaml.safe_load(Path(params_file).read_text())
    return prov


@click.command()
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Image store.")
@click.option(
    "--features",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder of the feature stores (for the provenance section).",
)
@click.option(
    "--metrics",
    required=True,
    type=click.Path(file_okay=False),
    help="Metrics folder (eval/*.json); loss curves are read from ../plots/train.",
)
@click.option(
    "--figures",
    "figures_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Figure folder made by `invert figures`.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Report folder.")
@params_option
@reports_errors
def report(
    images: str, features: str, metrics: str, figures_dir: str, out: str, params_file: str
) -> None:
    """Write OUT/index.html: the error table beside the paper's values, every figure, the
    loss curves and how the run was made (data, weights, the whole params file).

    Reads the `report` section of the params file (`run`: the name shown under the title).
    """
    run = parse(ReportParams, read_section(params_file, "report"), section="report").run
    prov = _provenance(images, features, params_file)
    path = make_report(metrics=metrics, figures_dir=figures_dir, out=out, provenance=prov, run=run)
    click.echo(f"report: {path}")
    click.echo(json.dumps({"random_weights": bool(prov.get("alexnet", {}).get("random_weights"))}))
