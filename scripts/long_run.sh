#!/usr/bin/env bash
# The embedded long run: the embedded default with the LBP decoder given what the results
# goal needs on the held-out photographs (README, "Results"): the mean of 3 decoders of
# width 0.5 (seeds 0-2), 1000 steps each (rate halved at 500), trained on the photographs'
# crops only (train.lbp.collages: false).
# A DVC experiment beside the default: the stores and the other decoders are the cached ones;
# only the LBP decoder and what reads it (its evaluation, the figures, the report) rerun.
# About 25 minutes on 2 CPU cores. The report names the run (report.run).
#   bash scripts/long_run.sh      # then `dvc exp show`; back to the default:
#                                 # git checkout -- . && dvc checkout
set -euo pipefail
cd "$(dirname "$0")/.."
# ++KEY: set the key, adding it where params.yaml does not have it yet (Hydra syntax)
exec dvc exp run -n "${RUN_NAME:-embedded-long}" \
  -S "report.run='embedded long run (LBP: the mean of 3 decoders of width 0.5)'" \
  -S ++train.lbp.width=0.5 -S ++train.lbp.steps=1000 -S ++train.lbp.lr_decay_every=500 \
  -S ++train.lbp.collages=false -S ++train.lbp.ensemble=3 "$@"
