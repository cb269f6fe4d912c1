"""torch.matmul at the shapes packages/kernels/bench/gpu.mjs times x's matmul at, in the same run.

    python3 torch_matmul.py '{"shapes": [[M, N, K], ...], "copies": {"M,N,K": n}}'

Prints one JSON line: {"torch": "<version>", "device": "<name>", "ms": {"M,N,K": median ms}}.
Method (the same as the Node side): bf16 operands, torch.matmul(a, w.t(), out=o) -> bf16, weights
rotated among `copies` buffers so each call streams its weight from HBM as a model's decode step
would; 3 warm-up calls, then a CUDA graph of `iters` back-to-back calls replayed 5 times and timed
with CUDA events (launch overhead excluded on both sides); median per call.
"""
import json
import statistics
import sys

import torch


def main() -> None:
    cfg = json.loads(sys.argv[1])
    dev = torch.device("cuda:0")
    gen = torch.Generator(device=dev).manual_seed(0)
    out = {}
    for m, n, k in cfg["shapes"]:
        key = f"{m},{n},{k}"
        copies = int(cfg.get("copies", {}).get(key, 1))
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16, generator=gen)
        ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16, generator=gen) * 0.05 for _ in range(copies)]
        o = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
        flops = 2.0 * m * n * k
        iters = max(3, min(200, int(20e-3 / max(flops / 700e12, (n * k * 2) / 4.0e12))))
        # Warm up on a side stream, then capture `iters` back-to-back calls in a CUDA graph.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(3):
                torch.matmul(a, ws[i % copies].t(), out=o)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(iters):
                torch.matmul(a, ws[i % copies].t(), out=o)
        graph.replay()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(5):
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / iters)
        out[key] = statistics.median(times)
        del a, ws, o, graph
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "ms": out}))


if __name__ == "__main__":
    main()
