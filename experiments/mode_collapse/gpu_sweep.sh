#!/usr/bin/env bash
# The stacked-digit sweeps on one GPU machine: every run of mode_collapse_stacked (with PixelCNN, which
# the 2-core sweep leaves out) and of mode_collapse_stacked_paper as its own process, PARALLEL at a time,
# longest first, each stopped at the deadline; then the finished runs (no checkpoints), their logs and a
# timing table are packed into $OUT. The runs are the README's commands, split one run per process.
#
# On the GPU machine, in the project root, with .gpu-wheels (../shared/gpu/wheels.sh) and a copy of the
# evaluation cache's stacked-digit entries in .devcache (optional: missing entries are computed once,
# by the first run) carried:
#   bash experiments/mode_collapse/gpu_sweep.sh SECONDS [PARALLEL]
set -u
seconds=${1:-450}
parallel=${2:-16}
deadline=$(( $(date +%s) + seconds ))
out=${OUT:-/tmp/gpu_sweep_out}
work=/tmp/gpu_sweep
mkdir -p "$out" "$work/logs"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 GEN_BENCH_CACHE=$PWD/.devcache
python3 -m pip install -q --no-index --no-deps --no-build-isolation .gpu-wheels/* 2>&1 | grep -v "^WARNING" || true
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING" || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "CPU cores: $(nproc --all)"   # plain nproc reads OMP_NUM_THREADS, exported above
python3 -c "import torch, lightning, hydra; print('torch', torch.__version__, 'lightning', lightning.__version__, 'hydra', hydra.__version__, 'cuda', torch.cuda.is_available())"

# A short run first: it fills any missing cache entry before the parallel runs read it, and shows a
# GPU problem in one log.
t0=$(date +%s)
timeout 120 gen-bench train experiment=mode_collapse_stacked arm=stacked/ddpm budget.images=640 \
    logger=csv output_root=$work/smoke > "$work/logs/smoke.log" 2>&1
echo "smoke run: rc=$? in $(( $(date +%s) - t0 )) s"; tail -n 3 "$work/logs/smoke.log"

# One line per run, the slowest first (PixelCNN and the diffusion models sample 26,000 images step by step).
{
  for a in pixelcnn ddpm flow_matching wgan_gp r3gan; do for s in 0 1 2; do
    echo "experiment=mode_collapse_stacked arm=stacked/$a seed=$s"; done; done
  for s in 0 1 2; do echo "experiment=mode_collapse_stacked_paper arm=stacked_paper/wgan_gp seed=$s"; done
  for s in 0 1 2; do for p in 4 2; do
    echo "experiment=mode_collapse_stacked_paper arm=stacked_paper/dcgan model.pack=$p seed=$s"; done; done
  for s in 0 1 2; do echo "experiment=mode_collapse_stacked_paper arm=stacked_paper/r3gan seed=$s"; done
  for s in 0 1 2; do echo "experiment=mode_collapse_stacked_paper arm=stacked_paper/dcgan seed=$s"; done
  for s in 0 1 2; do for p in 4 2; do
    echo "experiment=mode_collapse_stacked arm=stacked/dcgan model.pack=$p seed=$s"; done; done
  for s in 0 1 2; do echo "experiment=mode_collapse_stacked arm=stacked/dcgan seed=$s"; done
} > "$work/jobs.txt"
echo "$(wc -l < "$work/jobs.txt") runs, $parallel at a time, $(( deadline - $(date +%s) )) s left"

run_one() {
  left=$(( deadline - $(date +%s) ))
  name=$(echo "$1" | tr ' /=' '_\-\-')
  if [ "$left" -lt 20 ]; then echo "$name not started" >> "$work/times.txt"; return; fi
  t=$(date +%s)
  # shellcheck disable=SC2086
  timeout "$left" gen-bench train -m $1 logger=csv output_root=$work/runs > "$work/logs/$name.log" 2>&1
  echo "$name rc=$? $(( $(date +%s) - t )) s" >> "$work/times.txt"
}
export -f run_one
export deadline work
t0=$(date +%s)
xargs -a "$work/jobs.txt" -d '\n' -P "$parallel" -I{} bash -c 'run_one "$@"' _ {}
echo "all runs: $(( $(date +%s) - t0 )) s"
sort "$work/times.txt"
nvidia-smi --query-gpu=memory.used --format=csv,noheader

mkdir -p "$work/runs"; cd "$work" || exit 1
tar czf "$out/runs.tgz" --exclude='*.ckpt' runs; tar czf "$out/logs.tgz" logs times.txt jobs.txt
ls -la "$out"
