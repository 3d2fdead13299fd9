"""GPU smoke test of an image or environment: ``python -m deploy.gpu_smoke`` (or
``python deploy/gpu_smoke.py`` inside the GPU image). Exit 0: torch and FAISS run kernels on
every visible GPU and agree with the CPU; 2: no CUDA device; 1: a check failed.

Checks what the static wheel inspection cannot: that the FAISS wheel has kernels for this GPU
(an sm_90 H100 fails with "no kernel image" when it has none) and that torch's CUDA 13 and
FAISS's CUDA 12 runtimes work side by side in one process.
"""

from __future__ import annotations

import sys


def main() -> int:
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device visible to torch", file=sys.stderr)
        return 2
    import faiss

    n_gpus = faiss.get_num_gpus()
    print(
        f"torch {torch.__version__} cuda {torch.version.cuda}; faiss {faiss.__version__}, "
        f"{n_gpus} GPU(s)"
    )
    if n_gpus < 1:
        print("FAISS sees no GPU (CPU-only wheel?)", file=sys.stderr)
        return 1
    rng = np.random.default_rng(0)
    items = rng.standard_normal((20_000, 64), dtype=np.float32)
    users = rng.standard_normal((256, 64), dtype=np.float32)
    cpu = faiss.IndexFlatIP(64)
    cpu.add(items)
    want_d, want_i = cpu.search(users, 10)
    ok = True
    for dev in range(n_gpus):
        name = torch.cuda.get_device_name(dev)
        cap = torch.cuda.get_device_capability(dev)
        t = torch.from_numpy(users).to(f"cuda:{dev}") @ torch.from_numpy(items).to(f"cuda:{dev}").T
        top = torch.topk(t, 10, dim=1).indices.cpu().numpy()
        res = faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(res, dev, cpu)
        got_d, got_i = gpu.search(users, 10)
        agree = float((got_i == want_i).mean())
        torch_agree = float((top == want_i).mean())
        close = bool(np.allclose(got_d, want_d, atol=1e-3))
        print(
            f"cuda:{dev} {name} sm_{cap[0]}{cap[1]}: faiss top-10 agreement {agree:.4f}, "
            f"torch {torch_agree:.4f}, scores close {close}"
        )
        ok &= agree > 0.99 and torch_agree > 0.99 and close
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
