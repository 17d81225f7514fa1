#!/usr/bin/env bash
# Extract a feature on a SLURM cluster through dask-jobqueue (an example; the tests do not run it).
#
#   pip install dask-jobqueue     # once, in the environment the jobs activate (ENV_ACTIVATE)
#   mkdir -p logs && sbatch scripts/slurm_extract.sh hog cache/images.zarr cache/features/hog.zarr
#   dvc commit extract@hog        # record the store in dvc.lock (paths as in dvc.yaml)
#
# This job is the coordinator: it starts a Dask scheduler, submits WORKER_JOBS SLURM jobs of
# Dask workers (one single-threaded worker process per core) and runs
# `invert extract FEATURE --scheduler ADDRESS`. Workers write whole shards straight into the
# store's scratch folder, so the repository must be on a filesystem every node sees. A killed
# or timed-out run resumes from its finished shards when submitted again.
#SBATCH --job-name=invert-extract
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=12:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: sbatch $0 FEATURE IMAGES_STORE OUT_STORE" >&2; exit 2; }
export FEATURE=$1 IMAGES=$2 OUT=$3
export WORKER_JOBS=${WORKER_JOBS:-8}          # SLURM jobs of workers
export CORES_PER_JOB=${CORES_PER_JOB:-16}     # worker processes per job, one thread each
export MEM_PER_JOB=${MEM_PER_JOB:-64GB}       # ~4 GB per worker: a shard of images + features
export PARTITION=${PARTITION:-} ACCOUNT=${ACCOUNT:-}  # empty: the cluster's defaults
export ENV_ACTIVATE=${ENV_ACTIVATE:-"source $PWD/.venv/bin/activate"}

python - <<'PY'
import os
import subprocess

from dask_jobqueue import SLURMCluster
from distributed import Client

env = os.environ
cores = int(env["CORES_PER_JOB"])
cluster = SLURMCluster(
    cores=cores,
    processes=cores,  # the extractors are single-threaded: one process per core
    memory=env["MEM_PER_JOB"],
    walltime="12:00:00",
    queue=env["PARTITION"] or None,
    account=env["ACCOUNT"] or None,
    job_script_prologue=[env["ENV_ACTIVATE"]],
    local_directory="$TMPDIR",  # node-local spill space (expanded on the node), not the cache
    log_directory="logs",
)
cluster.scale(jobs=int(env["WORKER_JOBS"]))
with Client(cluster) as client:
    client.wait_for_workers(1)  # start with the first worker; the others join as they come
    cmd = ["invert", "-v", "extract", env["FEATURE"], "--images", env["IMAGES"]]
    cmd += ["--out", env["OUT"], "--params", "params.yaml"]
    subprocess.run([*cmd, "--scheduler", cluster.scheduler_address], check=True)
cluster.close()
PY
