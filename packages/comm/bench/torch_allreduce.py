"""All-reduce baseline for packages/comm/bench/allreduce.mjs: torch.distributed over NCCL.

Started by @x/comm's launcher with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT, NCCL_NVLS_ENABLE=0). argv[1] is the JSON schedule
[{bytes, warmup, iters}, ...]; each size is timed exactly as the x ranks time it: `iters`
back-to-back in-place f32 sum all-reduces between two CUDA events after `warmup` untimed ones.
Rank 0 prints one line "RESULT {json}".
"""

import json
import os
import sys

import torch
import torch.distributed as dist


def main() -> None:
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    schedule = json.loads(sys.argv[1])
    rank = int(os.environ["RANK"])
    local = int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", device_id=device)
    max_bytes = max(s["bytes"] for s in schedule)
    buf = torch.zeros(max_bytes // 4, dtype=torch.float32, device=device)
    sizes = []
    for s in schedule:
        t = buf[: s["bytes"] // 4]
        for _ in range(s["warmup"]):
            dist.all_reduce(t)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(s["iters"]):
            dist.all_reduce(t)
        end.record()
        end.synchronize()
        sizes.append({"bytes": s["bytes"], "us": start.elapsed_time(end) * 1000.0 / s["iters"]})
    if rank == 0:
        nccl = ".".join(str(v) for v in torch.cuda.nccl.version())
        print("RESULT " + json.dumps({"torch": torch.__version__, "nccl": nccl, "sizes": sizes}), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
