#!/usr/bin/env python3
"""Trains x's built-in default model: a byte-level BPE tokenizer and a small LlamaForCausalLM on the
King James Bible (public domain; see docs/default-model.md), saved as a Hugging Face directory.

It is a demo that proves the engine loads and runs a real checkpoint with its own tokenizer and
writes readable English; it is not a model for real use.

    bash packages/engine/scripts/default-model/extract_corpus.sh        # the corpus text
    python3 packages/engine/scripts/default-model/train.py              # one CUDA GPU, < 5 minutes
    python3 packages/engine/scripts/default-model/train.py --device cpu --max-steps 30 \\
        --batch-size 4 --seq-len 128 --out /tmp/x-default-model        # CPU smoke test

Needs torch, transformers and tokenizers. Deterministic for a seed (the same data order and
initialization; GPU kernels may still differ in the last bits). bf16 autocast on CUDA; weights
are saved in bf16.
"""

import argparse
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig

ENGINE = Path(__file__).resolve().parents[2]
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
# The model is not trained on conversations: the template lays the messages out as plain text and
# the model continues it (a user's verse gets more verses).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['content'] | trim }}\n{% endfor %}"
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=ENGINE / "models/.corpus/kjv.txt")
    p.add_argument("--out", type=Path, default=ENGINE / "models/default")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cuda or cpu")
    p.add_argument("--seed", type=int, default=1611)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate-size", type=int, default=704)
    p.add_argument("--seq-len", type=int, default=512, help="training context = max_position_embeddings")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-steps", type=int, default=1200)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--time-limit-s", type=float, default=270.0,
                   help="stop the optimization early past this many seconds (a guard for the 5-minute budget)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (off by default)")
    return p.parse_args()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def read_chapters(path: Path) -> list[str]:
    if not path.exists():
        raise SystemExit(f"{path} not found: run packages/engine/scripts/default-model/extract_corpus.sh first")
    text = path.read_text(encoding="utf-8")
    chapters = [c.strip() for c in text.split("\n\n") if c.strip()]
    if len(chapters) < 100:
        raise SystemExit(f"{path}: expected the KJV (1189 chapters), found {len(chapters)} paragraphs")
    return chapters


def train_tokenizer(chapters: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenization): every byte is in the vocabulary, so any text
    round-trips; BOS is added by the post-processor, as Llama tokenizers do."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(chapters, trainer=trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, bos)])
    return tok


def encode_corpus(tok: Tokenizer, chapters: list[str]) -> torch.Tensor:
    """One token stream: each chapter is BOS + text + EOS (the post-processor adds the BOS)."""
    eos = tok.token_to_id(EOS)
    ids: list[int] = []
    for enc in tok.encode_batch(chapters):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def batch_at(data: torch.Tensor, starts: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + torch.arange(seq_len + 1, device=starts.device)[None, :]
    window = data[idx]
    return window[:, :-1], window[:, 1:]


@torch.no_grad()
def evaluate(model, data: torch.Tensor, args, device: str, autocast) -> float:
    g = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    losses = []
    for _ in range(8):
        starts = torch.randint(0, len(data) - args.seq_len - 1, (args.batch_size,), generator=g).to(device)
        x, y = batch_at(data, starts, args.seq_len)
        with autocast():
            logits = model(input_ids=x).logits
        losses.append(torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten()).item())
    return sum(losses) / len(losses)


def main() -> None:
    args = parse_args()
    started = time.time()
    seed_everything(args.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    chapters = read_chapters(args.corpus)
    corpus_sha = hashlib.sha256(args.corpus.read_bytes()).hexdigest()
    tok = train_tokenizer(chapters, args.vocab_size)
    vocab = tok.get_vocab_size()
    print(f"tokenizer: byte-level BPE, {vocab} tokens, trained in {time.time() - started:.1f}s", flush=True)

    # Hold out every 50th chapter for the validation loss.
    train_ids = encode_corpus(tok, [c for i, c in enumerate(chapters) if i % 50 != 49]).to(device)
    val_ids = encode_corpus(tok, [c for i, c in enumerate(chapters) if i % 50 == 49]).to(device)
    print(f"corpus: {len(chapters)} chapters, {len(train_ids)} train / {len(val_ids)} val tokens "
          f"({args.corpus.stat().st_size / len(train_ids):.2f} bytes per token)", flush=True)

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.hidden_size // args.heads,
        max_position_embeddings=args.seq_len,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        bos_token_id=tok.token_to_id(BOS),
        eos_token_id=tok.token_to_id(EOS),
        pad_token_id=tok.token_to_id(PAD),
    )
    config.architectures = ["LlamaForCausalLM"]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: LlamaForCausalLM, {params / 1e6:.2f}M parameters, hidden {args.hidden_size}, "
          f"{args.layers} layers, {args.heads} heads / {args.kv_heads} KV heads, device {device}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if device == "cuda" else {}),
    )
    step_model = torch.compile(model) if args.compile else model

    def autocast():
        if device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    g = torch.Generator(device="cpu").manual_seed(args.seed)
    train_started = time.time()
    loss_value = float("nan")
    steps_done = 0
    for step in range(args.max_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        starts = torch.randint(0, len(train_ids) - args.seq_len - 1, (args.batch_size,), generator=g).to(device)
        x, y = batch_at(train_ids, starts, args.seq_len)
        with autocast():
            logits = step_model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps_done = step + 1
        last = steps_done == args.max_steps
        if step % 50 == 0 or last:
            loss_value = loss.item()
            print(f"step {steps_done}/{args.max_steps} loss {loss_value:.4f} lr {lr_at(step, args):.2e} "
                  f"{time.time() - train_started:.1f}s", flush=True)
        if (steps_done % args.eval_every == 0) or last:
            model.eval()
            print(f"step {steps_done} val loss {evaluate(model, val_ids, args, device, autocast):.4f}", flush=True)
            model.train()
        if time.time() - started > args.time_limit_s and not last:
            print(f"time limit: stopping after {steps_done} steps ({time.time() - started:.0f}s)", flush=True)
            break

    model.eval()
    val_loss = evaluate(model, val_ids, args, device, autocast)
    save(model, tok, config, args, out=args.out)
    meta = {
        "corpus": "King James Bible (Debian bible-kjv-text), scripts/default-model/extract_corpus.sh",
        "corpus_sha256": corpus_sha,
        "seed": args.seed,
        "steps": steps_done,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "train_tokens_seen": steps_done * args.batch_size * args.seq_len,
        "final_train_loss": round(loss_value, 4),
        "val_loss": round(val_loss, 4),
        "parameters": params,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "train_seconds": round(time.time() - started, 1),
    }
    # On the CPU in fp32 (no TF32), as x computes: x's test must reproduce these tokens exactly.
    meta["reference"] = check(args.out, "cpu")
    (args.out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"saved {args.out} ({sum(f.stat().st_size for f in args.out.iterdir()) / 1e6:.1f} MB); "
          f"val loss {val_loss:.4f}; {time.time() - started:.0f}s in all", flush=True)


def save(model, tok: Tokenizer, config: LlamaConfig, args, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        if f.suffix in (".safetensors", ".json", ".jinja", ".md"):
            f.unlink()
    model.to(torch.bfloat16).save_pretrained(out)  # safetensors
    GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=128,
    ).save_pretrained(out)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": args.seq_len,
        "chat_template": CHAT_TEMPLATE,
    }, indent=2) + "\n")
    (out / "README.md").write_text(
        "# x default model\n\n"
        f"A {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M-parameter LlamaForCausalLM with its own "
        f"{tok.get_vocab_size()}-token byte-level BPE tokenizer, trained by "
        "packages/engine/scripts/default-model/train.py on the King James Bible (public domain; in the United "
        "Kingdom the text is under Crown letters patent). A demo that proves the x engine, not a model for real "
        "use. See docs/default-model.md.\n")


def check(out: Path, device: str) -> dict:
    """transformers reads the directory back (tokenizer, chat template, weights) and records, in
    fp32, the greedy continuation of a prompt: x's tests generate it again and must match."""
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).to(device).eval()
    prompt = "And God said"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False)
    assert rendered == f"{BOS}{prompt}\n", rendered
    ids = tokenizer(prompt).input_ids
    assert ids[0] == tokenizer.bos_token_id, ids
    greedy, margin = [], float("inf")
    x = torch.tensor([ids], device=device)
    with torch.no_grad():
        for _ in range(32):  # no EOS stop: x's test runs with --ignore-eos
            logits = model(input_ids=x).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            margin = min(margin, float(top2[0] - top2[1]))
            nxt = int(torch.argmax(logits))
            greedy.append(nxt)
            x = torch.cat([x, torch.tensor([[nxt]], device=device)], dim=1)
    print(f"sample (greedy): {prompt}{tokenizer.decode(greedy, skip_special_tokens=True)!r}", flush=True)
    return {"prompt": prompt, "prompt_ids": ids, "greedy_ids": greedy, "greedy_min_margin": margin}


if __name__ == "__main__":
    main()
