#!/usr/bin/env bash
# Set up hpcft from nothing: a virtual environment with the training stack, and the tiny
# test model. Idempotent: a second run with unchanged requirements takes seconds.
#   bash scripts/setup.sh            # then: .venv/bin/python -m hpcft model=tiny_llama
# Env: HPCFT_VENV (default .venv), HPCFT_HOME (models; default ~/.cache/hpcft), PYTHON.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HPCFT_VENV:-$REPO/.venv}"
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

# Reinstall only when what we install changed.
stamp="$VENV/.hpcft-installed"
want="$(cat pyproject.toml constraints/train.txt scripts/install.sh | sha256sum | cut -d' ' -f1)"

# The deploy stage's vLLM in its own venv (HPCFT_SETUP_SERVE=1; scripts/test.sh asks for it),
# installed beside the training stack: both mostly fetch and unpack wheels, so side by side
# they take little more than the longer one. Its log is shown if it fails.
SERVE_VENV="${HPCFT_SERVE_VENV:-$REPO/.venv-serve}"
serve_stamp="$SERVE_VENV/.hpcft-installed"
serve_want="$(cat pyproject.toml constraints/train.txt constraints/serve.txt scripts/install.sh | sha256sum | cut -d' ' -f1)"
serve_pid=""
if [ "${HPCFT_SETUP_SERVE:-0}" = 1 ] && [ "$(cat "$serve_stamp" 2>/dev/null)" != "$serve_want" ]; then
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

HOME_DIR="${HPCFT_HOME:-$HOME/.cache/hpcft}"
HF_HUB_OFFLINE=1 "$VENV/bin/python" scripts/make_tiny_llama.py "$HOME_DIR/models/tiny_llama"
echo "setup: ready. Try: $VENV/bin/python -m hpcft model=tiny_llama"
