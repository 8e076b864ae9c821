"""Build a tiny random-weight Llama model and tokenizer, fully offline.

Used to exercise real LLaMA-Factory training / export / serving on CPU in
seconds. The tokenizer is a byte-level BPE trained locally with `tokenizers`
on a small generated English corpus, wrapped as `PreTrainedTokenizerFast`
with `<s>`, `</s>`, `<pad>`, `<unk>` and a simple chat template.

Usage: python scripts/make_tiny_llama.py OUT_DIR [--force]

Deterministic (fixed seed) and idempotent: if OUT_DIR already holds
config.json and weights, it prints a message and exits 0 unless --force.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SEED = 1234
# Two heads of 32: vLLM's CPU attention kernels take head sizes 32, 64, ..., 512 only
# (head_dim 16 starts, then fails on the first request).
TINY_LLAMA = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
WORDS = "cat dog sun tree book river apple house blue green small big fast slow red moon bird fish road stone"
TEMPLATES = [
    "The {a} sees the {b}.",
    "Repeat: {a}",
    "Translate {a} and {b} into a sentence.",
    "A {a} is not a {b}, but both are nice.",
    "Question: what is {a}? Answer: {b}.",
    "user: say {a}\nassistant: {a}",
]


def corpus() -> list[str]:
    """A few hundred deterministic English-like lines."""
    words = WORDS.split()
    pairs = itertools.product(words, words[::-1])
    return [t.format(a=a, b=b) for (a, b), t in zip(pairs, itertools.cycle(TEMPLATES))]


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    bos, eos, pad = "<s>", "</s>", "<pad>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token="<unk>")
    fast.model_max_length = 512
    fast.chat_template = lf_chat_template(fast)
    return fast


def lf_chat_template(tokenizer) -> str:
    """LLaMA-Factory's own `default` template as Jinja (what its `export` writes), so an engine
    that applies the tokenizer's template (vLLM serving the base model or a LoRA adapter)
    builds the prompts LLaMA-Factory trained on; the simple one where it is not installed."""
    try:
        from llamafactory.data.template import get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments
    except ImportError:
        return CHAT_TEMPLATE
    tokenizer.chat_template = None
    get_template_and_fix_tokenizer(tokenizer, DataArguments(template="default"))
    return str(tokenizer.chat_template)


def present(out: Path, weights: tuple[str, ...]) -> bool:
    """Built already, with the current shape (an older build is rebuilt)."""
    try:
        config = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return False
    shape = all(config.get(k) == v for k, v in TINY_LLAMA.items())
    template = out / "chat_template.jinja"  # where transformers 5 saves it
    templated = template.is_file() and "Human: " in template.read_text()
    return shape and templated and any((out / w).is_file() for w in weights)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    parser.add_argument("--vocab-size", type=int, default=512)
    args = parser.parse_args(argv)

    out: Path = args.out_dir
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    if present(out, weights) and not args.force:
        print(f"tiny llama already present in {out}; skipping (use --force to rebuild)")
        return 0

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    tokenizer = build_tokenizer(args.vocab_size)
    special_ids = {f"{t}_token_id": getattr(tokenizer, f"{t}_token_id") for t in ("bos", "eos", "pad")}
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=512, tie_word_embeddings=False, **TINY_LLAMA, **special_ids
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"saved tiny llama ({n_params:,} params, vocab {len(tokenizer)}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
