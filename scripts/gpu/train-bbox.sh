#!/usr/bin/env bash
# The lesson's bbox pipeline on a machine with an NVIDIA GPU, with the GPU's
# use sampled while it runs. Prints the training speed (images/s per epoch,
# from the metrics CSV the train stage writes) and GPU utilisation/memory.
#
# usage: scripts/gpu/train-bbox.sh [DATA_DIR] [OUT_DIR]
#   DATA_DIR  default ../shared/voc2007 (the lesson's layout)
#   OUT_DIR   default runs/gpu-bbox
#
# Needs cargo, python3 with pip, and either PyPI (libtorch 2.13.0 with CUDA,
# about 5 GB, is installed into the cache on first use) or
# LESSON8_LIBTORCH=<a torch 2.13.0 package dir> for an existing install.
set -euo pipefail
cd "$(dirname "$0")/../.."

data=${1:-../shared/voc2007}
out=${2:-runs/gpu-bbox}
samples=$(mktemp)

command -v nvidia-smi >/dev/null || { echo "error: nvidia-smi not found: this script is for a GPU machine" >&2; exit 1; }
command -v cargo >/dev/null || { echo "error: cargo not found (install Rust first)" >&2; exit 1; }
[ -f "$data/pascal_train2007.json" ] || { echo "error: $data/pascal_train2007.json not found" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

export LESSON8_DEVICE=cuda
echo "== libtorch with CUDA"
cargo xtask setup

echo "== sampling the GPU every 500 ms into $samples"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 >"$samples" &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true; rm -f "$samples"' EXIT

echo "== cargo xtask pipeline bbox --data $data --out $out"
started=$(date +%s)
cargo xtask pipeline bbox --data "$data" --out "$out"
elapsed=$(( $(date +%s) - started ))
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true

echo "== results"
echo "pipeline wall time: ${elapsed} s"
# Training images: the rows of bb.csv less the lesson's 20% validation split.
bb=$(find "$out" -name bb.csv | head -n1)
train_images=0
if [ -n "$bb" ]; then
    train_images=$(( ($(wc -l <"$bb") - 1) * 8 / 10 ))
fi
for metrics in $(find "$out" -path '*metrics*' -name '*.csv' | sort); do
    echo "$metrics:"
    awk -F, -v n="$train_images" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == "seconds") col = i; next }
        col && $col > 0 { printf "  epoch %s: %.1f s, %.1f images/s (%d training images)\n", $1, $col, n / $col, n }
    ' "$metrics"
done
awk -F', *' 'NF >= 2 { n++; u += $1; if ($1 > umax) umax = $1; if ($2 > mmax) mmax = $2 }
    END { if (n) printf "GPU utilisation: mean %.0f%%, max %d%% over %d samples; memory used max %d MiB\n", u / n, umax, n, mmax
          else print "no GPU samples" }' "$samples"
