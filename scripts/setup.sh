#!/usr/bin/env bash
# Set up hpcft from nothing: a virtual environment with the training stack, and the tiny
# test model. Idempotent: a second run with unchanged requirements takes seconds.
#   bash scripts/setup.sh            # then: .venv/bin/python -m hpcft model=tiny_llama
# Env: HPCFT_VENV (default .venv), HPCFT_HOME (models; default ~/.cache/hpcft), PYTHON.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HPCFT_VENV:-$REPO/.venv}"
cd "$REPO"

# Reinstall only when what we install changed.
stamp="$VENV/.hpcft-installed"
want="$(cat pyproject.toml constraints/train.txt scripts/install.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    started=$SECONDS
    echo "setup: installing the training stack (torch, LLaMA-Factory, FlagEmbedding, DeepSpeed; ~4 min the first time)"
    # pip warns once per package about this machine's extra local indexes; keep real errors.
    bash scripts/install.sh dev "$VENV" 2> >(grep -v "^WARNING: Location" >&2)
    echo "$want" > "$stamp"
    echo "setup: installed in $((SECONDS - started)) s"
fi

# The deploy stage's vLLM in its own venv (HPCFT_SETUP_SERVE=1; scripts/test.sh asks for it).
SERVE_VENV="${HPCFT_SERVE_VENV:-$REPO/.venv-serve}"
serve_stamp="$SERVE_VENV/.hpcft-installed"
serve_want="$(cat pyproject.toml constraints/train.txt constraints/serve.txt scripts/install.sh | sha256sum | cut -d' ' -f1)"
if [ "${HPCFT_SETUP_SERVE:-0}" = 1 ] && [ "$(cat "$serve_stamp" 2>/dev/null)" != "$serve_want" ]; then
    echo "setup: installing vLLM for the deploy stage into $SERVE_VENV"
    bash scripts/install.sh serve "$SERVE_VENV" 2> >(grep -v "^WARNING: Location" >&2)
    echo "$serve_want" > "$serve_stamp"
fi

HOME_DIR="${HPCFT_HOME:-$HOME/.cache/hpcft}"
HF_HUB_OFFLINE=1 "$VENV/bin/python" scripts/make_tiny_llama.py "$HOME_DIR/models/tiny_llama"
echo "setup: ready. Try: $VENV/bin/python -m hpcft model=tiny_llama"
