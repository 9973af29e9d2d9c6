#!/usr/bin/env bash
# Prepare, on a machine with PyPI access, the wheels that benchmarks/gpu_check.sh installs on
# the GPU machine (which has torch, torchvision, numpy, scipy, pillow, tqdm and pytest, but no
# network): kornia (a core dependency), and Lucent 0.1.8 with what it imports, for the
# side-by-side rows. They go to .whl/ (git-ignored); about 14 MB, Python 3.12, x86-64.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    kornia==0.9.0 kornia_rs==0.2.0 \
    torch-lucent==0.1.8 decorator==5.3.1 ipython==9.18.1 ipython_pygments_lexers==1.1.1 \
    jedi==0.20.1 parso==0.8.7 matplotlib-inline==0.2.2 pexpect==4.9.0 ptyprocess==0.7.0 \
    prompt_toolkit==3.0.53 wcwidth==0.9.4 pure_eval==0.2.4 stack-data==0.6.3 \
    asttokens==3.0.2 executing==2.3.0 traitlets==5.16.1
du -sh .whl
