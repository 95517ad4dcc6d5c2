#!/usr/bin/env bash
# The loader benchmark on a many-core machine (the project's 16-core GPU box):
# the augment loader at 1, 2, 4, 8 and 16 threads and the four Python peers
# (cv2, tv2, pil, albu) with one DataLoader worker per core, in one run.
#
# usage: scripts/gpu/bench-loader.sh [more `cargo xtask bench loader` options]
#   THREADS=1,2,4,8,16   loader thread counts to time
#   WORKERS=$(nproc)     peers' DataLoader workers (and the loader's count for the ratio)
# e.g.   scripts/gpu/bench-loader.sh --images 2000 --repeats 5
#
# Needs, beside the repository: ../shared/voc2007 (the VOC 2007 train images)
# and ../shared/bench/peer_loader.py. The peer venv is made in the cache on
# first use; nothing else is installed on the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
threads="${THREADS:-1,2,4,8,16}"
workers="${WORKERS:-$(nproc)}"
exec cargo xtask bench loader --threads "$threads" --workers "$workers" "$@"
