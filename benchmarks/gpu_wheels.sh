#!/usr/bin/env bash
# Wheels of the packages benchmarks/gpu_check.sh needs that the device machine's image lacks
# (its python3 is 3.12 on x86-64 and it reaches no network), into .whl/, which this script
# adds to .git/info/exclude. The versions are the ones the CPU results were measured with.
set -eu -o pipefail
cd "$(git rev-parse --show-toplevel)"
exclude=$(git rev-parse --git-path info/exclude)  # also in a worktree, where .git is a file
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2> /dev/null || echo '/.whl/' >> "$exclude"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  ml_collections==1.1.0 tensorboardX==2.6.5 dm-pix==0.4.5 augmax==0.4.1 kornia==0.9.2 \
  kornia_rs==0.2.0
ls -l .whl
