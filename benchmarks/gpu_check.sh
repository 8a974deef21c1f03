#!/usr/bin/env bash
# The first look at segkit on an NVIDIA GPU machine, in one command and under 8 minutes, with one report:
#
#   bash benchmarks/gpu_check.sh [--data-root DIR] [--output DIR]       # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --dry-run --output /tmp/check          # the same steps on a CPU, tiny (the tests)
#
# Steps, each under its own time limit, each one's exit code, time and output tail in <output>/report.md:
#   1. environment: nvidia-smi, the versions of python, torch, torchvision, lightning and torchmetrics;
#   2. packages: hydra-core, omegaconf, albumentations (and what they need) installed from benchmarks/wheels/
#      only (pip --no-index), when they are not importable already: the GPU machine has no network;
#   3. bench: dsc_segnet at 320x320, batch 32, rows default (channels_last), nchw, bf16, compile and bf16_compile,
#      with MFU (segkit.bench);
#   4. peers: segkit's networks side by side with torchvision's (and smp's when its wheel is there) in bf16;
#   5. training: experiment=pets_dsc_segnet for 1 minute in bf16 on the Pets data under --data-root (default
#      ../shared/data), or on the built-in shapes data when that folder is missing;
#   6. DDP: a 2-process run (trainer=ddp) when two or more GPUs are visible, else skipped.
#
# Filling benchmarks/wheels/ (on a machine with network access and the GPU machine's Python version; the GPU
# machine carries torch, torchvision, lightning and torchmetrics already):
#
#   pip download --dest benchmarks/wheels --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
#       hydra-core==1.3.8 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 albumentations==2.0.8 rich \
#       matplotlib scipy segmentation-models-pytorch
#
# (antlr4-python3-runtime has no wheel on PyPI: drop --only-binary for it, `pip wheel` turns its sdist into one.)
# The wheels folder is git-ignored; copy it beside the script with the repository.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
dry_run=0
data_root="$repo/../shared/data"
output="$repo/outputs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --data-root) data_root="$2"; shift ;;
    --output) output="$2"; shift ;;
    -h|--help) sed -n '2,27p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
python="${PYTHON:-python}"
mkdir -p "$output"
report="$output/report.md"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE=offline
cd "$repo" || exit 1

failures=0
# run_step NAME SECONDS COMMAND...: runs the command under `timeout`, its output in <output>/NAME.log, and adds
# its exit code, seconds and last lines to the report.
run_step() {
  local name="$1" limit="$2"; shift 2
  # A dry run's tiny steps take seconds, but on a CPU that others share each Python start alone can take a minute.
  [ $dry_run -eq 1 ] && limit=300
  local log="$output/$name.log" start end code
  start=$(date +%s)
  timeout "$limit" "$@" >"$log" 2>&1
  code=$?
  end=$(date +%s)
  local status="ok"
  if [ "$code" -eq 124 ]; then status="timed out after ${limit} s"; elif [ "$code" -ne 0 ]; then status="failed (exit $code)"; fi
  [ "$status" = "ok" ] || failures=$((failures + 1))
  {
    echo "## $name: $status, $((end - start)) s"
    echo
    echo '    $' "$*"
    tail -n 40 "$log" | sed 's/^/    /'
    echo
  } >>"$report"
  echo "gpu_check: $name: $status ($((end - start)) s)"
}

skip_step() {
  printf '## %s: skipped\n\n    %s\n\n' "$1" "$2" >>"$report"
  echo "gpu_check: $1: skipped ($2)"
}

{
  echo "# segkit GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ)$([ $dry_run -eq 1 ] && echo ' (dry run on the CPU)')"
  echo
} >"$report"

if [ $dry_run -eq 1 ]; then
  accelerator=cpu
  bench_args=(bench.models=[dsc_segnet] model.encoder.width=0.25 bench.image_size=[32,32] bench.batch_size=2
              bench.warmup=1 bench.steps=1 bench.seconds=0 bench.repeats=1 bench.loader_batches=0 bench.device=cpu
              bench.threads=1)
  peer_args=(bench.peers=true bench.models=[dsc_segnet] bench.image_size=[32,32] bench.batch_size=2 bench.steps=1
             bench.repeats=1 bench.device=cpu bench.threads=1)
  train_args=(data=shapes data.num_train=8 data.num_val=4 data.batch_size=4 data.image_size=[32,32]
              data.num_workers=0 model.encoder.width=0.25 trainer.max_epochs=1 trainer.accelerator=cpu
              callbacks.rich_progress_bar=null)
else
  accelerator=gpu
  bench_args=(bench.models=[dsc_segnet] bench.image_size=[320,320] bench.batch_size=32
              bench.warmup=3 bench.steps=10 bench.seconds=5 bench.repeats=2 bench.loader_batches=0 bench.device=cuda
              "bench.options=[default,nchw,bf16,compile,bf16_compile]")
  peer_args=(bench.peers=true bench.image_size=[320,320] bench.batch_size=32 bench.steps=10 bench.repeats=3
             bench.device=cuda trainer.precision=bf16-mixed)
  if [ -d "$data_root/oxford-iiit-pet" ]; then
    train_args=(experiment=pets_dsc_segnet "data.root=$data_root" trainer=gpu trainer.precision=bf16-mixed
                trainer.max_time=00:00:01:00 callbacks.rich_progress_bar=null)
  else
    train_args=(trainer=gpu trainer.precision=bf16-mixed trainer.max_time=00:00:01:00 callbacks.rich_progress_bar=null)
  fi
fi

run_step environment 20 bash -c "nvidia-smi || echo 'no nvidia-smi (no NVIDIA driver here)'; $python -c '
import sys, torch, torchvision, lightning, torchmetrics
print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"torchvision\", torchvision.__version__,
      \"lightning\", lightning.__version__, \"torchmetrics\", torchmetrics.__version__)
print(\"cuda\", torch.version.cuda, \"devices\", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])'"

if "$python" -c "import hydra, omegaconf, albumentations" 2>/dev/null; then
  skip_step packages "hydra-core, omegaconf and albumentations are importable already"
elif [ -d "$here/wheels" ]; then
  run_step packages 60 "$python" -m pip install --no-index --find-links "$here/wheels" hydra-core omegaconf \
    albumentations rich matplotlib scipy
  "$python" -m pip install --no-index --find-links "$here/wheels" segmentation-models-pytorch >/dev/null 2>&1 || true
else
  skip_step packages "$here/wheels is missing: fill it with pip download (see the top of this script)"
fi

gpus=$("$python" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ $dry_run -eq 0 ] && [ "$gpus" -lt 1 ]; then
  echo "gpu_check: torch sees no GPU here; --dry-run runs the steps on the CPU" | tee -a "$report" >&2
  exit 1
fi

# The limits add up to 8 minutes (480 s).
run_step bench 170 "$python" -m segkit.bench "${bench_args[@]}" "hydra.run.dir=$output/bench"
run_step peers 60 "$python" -m segkit.bench "${peer_args[@]}" "hydra.run.dir=$output/peers"
run_step train 110 "$python" -m segkit.train "${train_args[@]}" "hydra.run.dir=$output/train"
if [ "$gpus" -ge 2 ]; then
  run_step ddp 60 "$python" -m segkit.train trainer=ddp trainer.devices=2 trainer.max_epochs=2 \
    callbacks.rich_progress_bar=null "hydra.run.dir=$output/ddp"
else
  skip_step ddp "$gpus GPU(s) visible: a 2-process DDP run needs two"
fi

echo "gpu_check: report in $report ($failures step(s) failed)"
[ "$failures" -eq 0 ]
