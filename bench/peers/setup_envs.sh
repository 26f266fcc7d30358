#!/usr/bin/env bash
# The peer libraries' own virtualenvs (they cannot share seqrec's pins):
#   bench/peers/setup_envs.sh [FOLDER]   (default: .venv-peers; bench/peers/compare.py reads
#   SEQREC_PEERS_VENVS or that default). CPU torch pinned first: an unpinned one pulls CUDA.
set -euo pipefail
ROOT="${1:-${SEQREC_PEERS_VENVS:-.venv-peers}}"
mkdir -p "$ROOT"

T="$ROOT/transformers4rec"
if [ ! -x "$T/bin/python" ] || ! "$T/bin/python" -c "import transformers4rec.torch" 2>/dev/null; then
  python3 -m venv "$T"
  "$T/bin/pip" install -q 'pip<26.3'
  "$T/bin/pip" install -q torch==2.13.0
  # merlin-core 23.8 pulls dask-cuda, whose releases need an unreachable index: the merlin
  # packages go in with --no-deps, their dependencies by hand (Transformers4Rec needs transformers 4.30)
  "$T/bin/pip" install -q numpy==1.26.4 pandas==1.5.3 pyarrow==21.0.0 dask==2024.1.1 distributed==2024.1.1 \
    "transformers[torch]==4.30.2" "fsspec>=2022.7.1" "numba>=0.54" "protobuf>=3.0.0" tqdm \
    "tensorflow-metadata>=1.2.0" "betterproto<2.0.0" packaging npy-append-array "pynvml>=11.0.0,<11.5" \
    scipy "scikit-learn>=0.20" "torchmetrics>=0.10.0"
  "$T/bin/pip" install -q --no-deps transformers4rec==23.12.0 merlin-core==23.8.0 merlin-dataloader==23.8.0 \
    merlin-models==23.8.0
fi

C="$ROOT/cornac"
if [ ! -x "$C/bin/python" ] || ! "$C/bin/python" -c "import cornac.models" 2>/dev/null; then
  python3 -m venv "$C"
  "$C/bin/pip" install -q 'pip<26.3'
  "$C/bin/pip" install -q torch==2.13.0
  "$C/bin/pip" install -q cornac==3.0.1 transformers   # cornac 3 needs numpy 2
fi
echo "peer virtualenvs ready under $ROOT"
