"""Random-weight models and synthetic rows for benchmarks/gpu_lora.py: nothing is downloaded.

    python benchmarks/gpu_models.py OUT_DIR {qwen2_5_0_5b,qwen2_5_7b,rehearsal} {cuda,cpu}

A model is a Qwen2 config with its real numbers (vocabulary included: the logits dominate long
sequences' memory) and random weights, built on the given device and saved; throughput and
memory do not depend on the weights' values. The tokenizer is a byte-level BPE trained here on
the synthetic words, with Qwen's special tokens, so LLaMA-Factory's `qwen` template runs as is.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    "qwen2_5_0_5b": dict(hidden_size=896, num_hidden_layers=24, intermediate_size=4864, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2_5_7b": dict(hidden_size=3584, num_hidden_layers=28, intermediate_size=18944, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    "rehearsal": dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=False),
}  # fmt: skip
"""Qwen2.5's config.json numbers; `rehearsal` is the 2-layer stand-in the CPU rehearsal trains."""
PARAMS_B = {"qwen2_5_0_5b": 0.494, "qwen2_5_7b": 7.615, "rehearsal": 0.0002}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def words(n: int, seed: int = 0) -> list[str]:
    """`n` pseudo-words (3-8 letters), the same for a seed."""
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8))) for _ in range(n)]


def build_tokenizer(out: Path) -> None:
    """A byte-level BPE of ~900 tokens over the synthetic words, saved beside the model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=SPECIAL_TOKENS, show_progress=False)
    vocab = words(500)
    bpe.train_from_iterator((" ".join(vocab[i : i + 20]) for i in range(0, 500, 20)), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")  # type: ignore[no-untyped-call]
    tok.save_pretrained(str(out))


def build_model(out: Path, shape: str, device: str) -> float:
    """The model `shape` with random weights (bf16 on a GPU, fp32 on CPU), saved to `out`: seconds taken."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    start = time.perf_counter()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
    model.save_pretrained(str(out))
    build_tokenizer(out)
    return time.perf_counter() - start


def long_rows(n: int, length: int) -> list[dict[str, str]]:
    """Rows of `length` synthetic words each: every row reaches a cutoff of `length` tokens."""
    vocab = words(500)
    rng = random.Random(1)
    return [
        {"instruction": "Continue.", "input": "", "output": " ".join(rng.choices(vocab, k=length))} for _ in range(n)
    ]


def short_rows(n: int) -> list[dict[str, str]]:
    """Rows of ~20 words (~60-90 tokens with the template), far shorter than any cutoff here."""
    vocab = words(500)
    rng = random.Random(2)
    return [
        {"instruction": " ".join(rng.choices(vocab, k=8)), "input": "", "output": " ".join(rng.choices(vocab, k=12))}
        for _ in range(n)
    ]


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text(json.dumps(rows))
    return path


if __name__ == "__main__":
    folder, name, where = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    print(json.dumps({"build_s": build_model(folder, name, where)}))
