// Plain CUDA-runtime baseline for copy-bandwidth.mjs: pinned host <-> device cudaMemcpyAsync on a
// non-default stream, timed with events, same method as the x side.
//   nvcc -O2 -o copy_baseline copy_baseline.cu && ./copy_baseline [bytes] [copies] [repeats] [warmups]
// Prints one JSON line: {"h2d_gbps":..,"d2h_gbps":..,...}; GB/s = bytes * copies / seconds / 1e9,
// the median over repeats.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CHECK(call)                                                                     \
  do {                                                                                  \
    cudaError_t err_ = (call);                                                          \
    if (err_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(err_));         \
      return 1;                                                                         \
    }                                                                                   \
  } while (0)

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Times `copies` copies of `bytes` each, `repeats` times after `warmups` untimed copies; returns
// the median GB/s in *gbps.
static int measure(void* dst, const void* src, size_t bytes, int copies, int repeats, int warmups,
                   cudaStream_t stream, double* gbps) {
  cudaEvent_t start, end;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&end));
  for (int i = 0; i < warmups; i++) CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
  CHECK(cudaStreamSynchronize(stream));
  std::vector<double> rates;
  for (int r = 0; r < repeats; r++) {
    CHECK(cudaEventRecord(start, stream));
    for (int i = 0; i < copies; i++) {
      CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
    }
    CHECK(cudaEventRecord(end, stream));
    CHECK(cudaEventSynchronize(end));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, start, end));
    rates.push_back(double(bytes) * copies / (ms / 1e3) / 1e9);
  }
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(end));
  *gbps = median(rates);
  return 0;
}

int main(int argc, char** argv) {
  size_t bytes = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : size_t(256) << 20;
  int copies = argc > 2 ? std::atoi(argv[2]) : 20;
  int repeats = argc > 3 ? std::atoi(argv[3]) : 5;
  int warmups = argc > 4 ? std::atoi(argv[4]) : 3;

  void* host = nullptr;
  void* dev = nullptr;
  cudaStream_t stream;
  CHECK(cudaSetDevice(0));
  CHECK(cudaMallocHost(&host, bytes));
  CHECK(cudaMalloc(&dev, bytes));
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::memset(host, 0x5a, bytes);

  double h2d = 0, d2h = 0;
  if (measure(dev, host, bytes, copies, repeats, warmups, stream, &h2d)) return 1;
  if (measure(host, dev, bytes, copies, repeats, warmups, stream, &d2h)) return 1;

  std::printf("{\"h2d_gbps\":%.3f,\"d2h_gbps\":%.3f,\"bytes\":%zu,\"copies\":%d,\"repeats\":%d}\n",
              h2d, d2h, bytes, copies, repeats);
  CHECK(cudaStreamDestroy(stream));
  CHECK(cudaFree(dev));
  CHECK(cudaFreeHost(host));
  return 0;
}
