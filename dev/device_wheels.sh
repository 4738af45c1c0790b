#!/usr/bin/env bash
# Fetches, into .whl/ (ignored by git), the wheels that the device tool's GPU image lacks for a training run: ale-py
# (with the Atari ROMs), gymnasium and its one missing dependency, for that image's Python 3.12. The image has
# torch, numpy, opencv, matplotlib and tqdm. dev/gpu_check.sh installs them there from the carried .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl ale-py==0.12.1 gymnasium==1.4.0 farama-notifications==0.0.6
ls -l .whl
