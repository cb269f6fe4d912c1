/**
 * @x/kernels — CUDA kernels (and CPU reference kernels): norms, rotary, activations, paged attention, KV writes, sampling, GEMM through cuBLASLt.
 *
 * Not built yet. This package deliberately exports nothing: a package whose capability is not
 * built yet exports nothing it cannot do, so no stub can pretend to work. See README.md.
 */
export {};
