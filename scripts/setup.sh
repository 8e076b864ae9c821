#!/usr/bin/env bash
# Set up hpcft from nothing: a virtual environment with the training stack, and the tiny
# test model. Idempotent: a second run with unchanged requirements takes seconds.
#   bash scripts/setup.sh            # then: .venv/bin/python -m hpcft model=tiny_llama
# Env: HPCFT_VENV (default .venv), HPCFT_HOME (models; default ~/.cache/hpcft), PYTHON,
# HPCFT_VENV_STORE (keep the venvs there; scripts/test.sh sets it, see below).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# uv, not pip (scripts/install.sh): its cache keeps every wheel, so a fresh clone's venvs take
# about a minute instead of 2.7 once one was made on this machine (pip fetched and unpacked
# 5.5 GB each time).
export HPCFT_INSTALLER="${HPCFT_INSTALLER:-uv}"
# Compiled: what the jobs, the tests and the quick start import, not all ~48,000 modules of the
# two venvs (install.sh compiled all: 66 s of CPU for .venv alone per fresh set-up, mostly
# modules nothing imports). One process per venv imports the entry modules right after the install and keeps
# their bytecode, before jobs that start together could each compile them; a module first
# imported later is compiled, and kept, by the first process that imports it.
export HPCFT_BYTECODE=on-import
TRAIN_MODULES="llamafactory.train.tuner llamafactory.launcher llamafactory.api.app llamafactory.chat.hf_engine
    FlagEmbedding.finetune.embedder.encoder_only.base FlagEmbedding.finetune.embedder.decoder_only.base
    FlagEmbedding.finetune.reranker.encoder_only.base deepspeed.comm lm_eval.evaluator lm_eval.tasks
    lm_eval.models.openai_completions transformers.models.llama.modeling_llama
    transformers.models.bert.modeling_bert torch.distributed.run wandb sentence_transformers pytrec_eval
    rouge_chinese jieba submitit optuna"
SERVE_MODULES="vllm.entrypoints.openai.api_server vllm.v1.engine.core"
# keep_bytecode PYTHON MODULES: import them once, keeping what was compiled.
keep_bytecode() {
    local modules output
    modules="$(echo "$2" | xargs | tr ' ' ',')"
    output="$(env -u PYTHONDONTWRITEBYTECODE HF_HUB_OFFLINE=1 "$1" -c "import $modules" 2>&1)" || {
        echo "$output" | tail -20 >&2
        echo "setup: importing what the jobs use failed in $1" >&2
        return 1
    }
}

# Reinstall only when what we install changed: the pins, the installer, this script (what it
# compiles) and the Python the venvs are made from.
installs() { cat pyproject.toml "$@" scripts/install.sh scripts/setup.sh; "${PYTHON:-python3}" -VV; }
want="$(installs constraints/train.txt | sha256sum | cut -d' ' -f1)"
serve_want="$(installs constraints/train.txt constraints/serve.txt | sha256sum | cut -d' ' -f1)"

# With HPCFT_VENV_STORE, the venvs are kept there between clones, as uv keeps its wheels: one
# per hash of what installs it, with .venv and .venv-serve linked to it. A fresh clone's
# set-up then re-points the editable hpcft at itself (seconds) instead of installing ~10 GB
# (50 s and 87 s of CPU), and what jobs compiled since is kept: bytecode, and DeepSpeed's CPU
# op, which its JIT builds again for every new venv path (53 s of CPU). A .venv that is a
# real folder is used as it is; venvs of the store unused for 3 days are removed.
# venv_path NAME KEY LINK: the venv to use for LINK (.venv or .venv-serve).
venv_path() {
    if [ -z "${HPCFT_VENV_STORE:-}" ] || { [ -e "$REPO/$3" ] && [ ! -L "$REPO/$3" ]; }; then
        echo "$REPO/$3"
        return
    fi
    mkdir -p "$HPCFT_VENV_STORE"
    ln -sfn "$HPCFT_VENV_STORE/$1-${2:0:16}" "$REPO/$3"
    echo "$HPCFT_VENV_STORE/$1-${2:0:16}"
}
VENV="${HPCFT_VENV:-$(venv_path train "$want" .venv)}"
stamp="$VENV/.hpcft-installed"
# installed_here VENV: its hpcft is this clone's (a kept venv's may be an earlier clone's).
installed_here() {
    grep -qF "\"file://$REPO\"" "$1"/lib/python*/site-packages/hpcft-*.dist-info/direct_url.json 2>/dev/null
}

# The deploy stage's vLLM in its own venv (HPCFT_SETUP_SERVE=1; scripts/test.sh asks for it),
# installed beside the training stack: both mostly fetch and unpack wheels, so side by side
# they take little more than the longer one. Its log is shown if it fails.
SERVE_VENV="${HPCFT_SERVE_VENV:-$REPO/.venv-serve}"
[ "${HPCFT_SETUP_SERVE:-0}" = 1 ] && SERVE_VENV="${HPCFT_SERVE_VENV:-$(venv_path serve "$serve_want" .venv-serve)}"
serve_stamp="$SERVE_VENV/.hpcft-installed"
serve_pid=""
if [ "${HPCFT_SETUP_SERVE:-0}" = 1 ] && [ "$(cat "$serve_stamp" 2>/dev/null)" = "$serve_want" ] \
    && ! installed_here "$SERVE_VENV"; then
    echo "setup: $SERVE_VENV is kept from another clone: its hpcft now points here"
    bash scripts/install.sh serve "$SERVE_VENV" > /dev/null
elif [ "${HPCFT_SETUP_SERVE:-0}" = 1 ] && [ "$(cat "$serve_stamp" 2>/dev/null)" != "$serve_want" ]; then
    echo "setup: installing vLLM for the deploy stage into $SERVE_VENV (beside the training stack)"
    serve_log="$(mktemp /tmp/hpcft-serve-install.XXXXXX)"
    { bash scripts/install.sh serve "$SERVE_VENV" && keep_bytecode "$SERVE_VENV/bin/python" "$SERVE_MODULES"; } > "$serve_log" 2>&1 &
    serve_pid=$!
    # A failed training install ends this script: the vLLM install must not outlive it.
    trap '[ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null; true' EXIT
fi

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    started=$SECONDS
    echo "setup: installing the training stack (torch, LLaMA-Factory, FlagEmbedding, DeepSpeed; ~1.5 min the first time on this machine)"
    # pip warns once per package about this machine's extra local indexes; keep real errors.
    bash scripts/install.sh dev "$VENV" 2> >(grep -v "^WARNING: Location" >&2)
    keep_bytecode "$VENV/bin/python" "$TRAIN_MODULES"
    echo "$want" > "$stamp"
    echo "setup: installed in $((SECONDS - started)) s"
elif ! installed_here "$VENV"; then
    echo "setup: $VENV is kept from another clone: its hpcft now points here"
    bash scripts/install.sh dev "$VENV" > /dev/null  # everything else is installed: seconds
fi

if [ -n "$serve_pid" ]; then
    serve_status=0
    wait "$serve_pid" || serve_status=$?
    serve_pid=""
    if [ "$serve_status" != 0 ]; then
        grep -v "^WARNING: Location" "$serve_log" | tail -40 >&2
        echo "setup: installing vLLM into $SERVE_VENV failed (its log: $serve_log)" >&2
        exit 1
    fi
    grep "^install: " "$serve_log" || true
    echo "$serve_want" > "$serve_stamp"
    rm -f "$serve_log"
fi

if [ -n "${HPCFT_VENV_STORE:-}" ]; then
    for used in "$stamp" "$serve_stamp"; do [ ! -f "$used" ] || touch "$used"; done
    find "$HPCFT_VENV_STORE" -mindepth 2 -maxdepth 2 -name .hpcft-installed -mtime +3 \
        -printf '%h\n' | xargs -r rm -rf
fi

HOME_DIR="${HPCFT_HOME:-$HOME/.cache/hpcft}"
HF_HUB_OFFLINE=1 "$VENV/bin/python" scripts/make_tiny_llama.py "$HOME_DIR/models/tiny_llama"
echo "setup: ready. Try: $VENV/bin/python -m hpcft model=tiny_llama"
