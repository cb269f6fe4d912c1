#!/usr/bin/env python3
"""Teacher-forced fp32 transformers reference for the GPU checks of @x/engine (engine.gpu.mjs).

For every fixture under packages/engine/fixtures/ (expected.json holds the prompt and the fp32
greedy continuation): one fp32 forward over prompt + the first STEPS greedy tokens gives the
reference logits after each prefix. For each of those STEPS positions it records the greedy token,
the 16 largest logits (ids and values) and max |logit|, so a bf16/fp16 run can be checked step by
step without shipping full vocabularies. It also records where transformers' own bf16 and fp16
greedy continuations (CPU, same checkpoint) first leave the fp32 one: how far bf16 resolution
carries on these tiny random models.

Run on the CPU from the repository root (deterministic fp32):
    python3 packages/engine/test/gpu/make_reference.py
"""

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent.parent / "fixtures"
STEPS = 16
TOP = 16


def first_divergence(model, ids, greedy):
    out = model.generate(ids, max_new_tokens=STEPS, do_sample=False, pad_token_id=0, eos_token_id=None)
    got = out[0, ids.shape[1]:].tolist()
    return next((i for i, (a, b) in enumerate(zip(got, greedy)) if a != b), STEPS)


def main() -> None:
    torch.manual_seed(0)
    refs = {}
    for d in sorted(p for p in FIXTURES.iterdir() if (p / "expected.json").exists()):
        e = json.loads((d / "expected.json").read_text())
        prompt, greedy = e["prompt_ids"], e["greedy_ids"][:STEPS]
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        ids = torch.tensor([prompt + greedy])
        with torch.no_grad():
            logits = model(ids).logits[0]
        steps = []
        for i in range(STEPS):
            row = logits[len(prompt) - 1 + i]
            top = torch.topk(row, TOP)
            steps.append({
                "token": greedy[i],
                "top_ids": top.indices.tolist(),
                "top_logits": [float(f"{x:.6g}") for x in top.values.tolist()],
                "max_abs": float(f"{float(row.abs().max()):.6g}"),
            })
            assert steps[-1]["top_ids"][0] == greedy[i], (d.name, i)
        prompt_ids = torch.tensor([prompt])
        with torch.no_grad():
            hf = {str(dt).replace("torch.", ""): first_divergence(
                AutoModelForCausalLM.from_pretrained(d, dtype=dt).eval(), prompt_ids, greedy)
                for dt in (torch.bfloat16, torch.float16)}
        refs[d.name] = {"steps": steps, "transformers_first_divergence": hf}
        print(d.name, hf)
    (HERE / "reference.json").write_text(json.dumps(refs) + "\n")


if __name__ == "__main__":
    main()
