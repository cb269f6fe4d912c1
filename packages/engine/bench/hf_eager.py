#!/usr/bin/env python3
"""transformers eager on the shapes of `pnpm bench:gpu-engine` (Llama-3.1-8B, random bf16 weights
initialized on the GPU — decode speed does not depend on the values), for the side-by-side table.

Decode at batch 1 and 128 after a prompt of 256 random tokens: one `model(...)` call per token with
the KV cache (DynamicCache), greedy, timed with CUDA synchronization around each step; median of
the timed steps after warm-up. PyTorch eager (no torch.compile, no CUDA graphs), transformers'
default attention (sdpa). Writes $OUT/hf-eager.json.

    python3 packages/engine/bench/hf_eager.py
"""

import json
import os
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

CTX = 256
STEPS = {1: 12, 128: 8}
WARMUP = 3


def main() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, rms_norm_eps=1e-5,
        max_position_embeddings=131072, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
    )
    t0 = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).eval()
    torch.cuda.synchronize()
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "transformers": __import__("transformers").__version__,
           "attention": model.config._attn_implementation, "context": CTX,
           "init_s": round(time.perf_counter() - t0, 2), "decode": []}
    for batch, steps in STEPS.items():
        ids = torch.randint(0, config.vocab_size, (batch, CTX), device="cuda")
        with torch.no_grad():
            res = model(input_ids=ids, use_cache=True)
            cache = res.past_key_values
            nxt = res.logits[:, -1].argmax(-1, keepdim=True)
            times = []
            for k in range(WARMUP + steps):
                torch.cuda.synchronize()
                t = time.perf_counter()
                res = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                nxt = res.logits[:, -1].argmax(-1, keepdim=True)
                torch.cuda.synchronize()
                if k >= WARMUP:
                    times.append(time.perf_counter() - t)
        ms = statistics.median(times) * 1e3
        out["decode"].append({"batch": batch, "stepMs": ms, "tokPerSec": batch / ms * 1e3})
        print(f"transformers eager: batch {batch}: {ms:.1f} ms/step, {batch / ms * 1e3:.1f} tok/s", flush=True)
        del cache, res
        torch.cuda.empty_cache()
    dest = os.environ.get("OUT", ".")
    with open(os.path.join(dest, "hf-eager.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
