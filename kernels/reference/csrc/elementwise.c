/* The sum of n same-layout fp32 tensors, left to right, with relu fused: one pass over the maps
 * where ATen makes two (the add, then relu in place over the sum). Bit for bit what ATen computes:
 * each add rounds once in the same order, and relu is ATen's clamp_min(x, 0) (NaN and -0.0 pass).
 * Called through ctypes by kernels/reference/elementwise.py; OpenMP threads as in batchnorm.c. */
#include <stdint.h>

#define CHUNK 4096

void alx_add(const float *const *xs, int n, int64_t numel, int relu, int threads, float *out) {
    int T = threads > 0 ? threads : 1;
    int64_t chunks = (numel + CHUNK - 1) / CHUNK;
#pragma omp parallel for num_threads(T) schedule(static)
    for (int64_t k = 0; k < chunks; k++) {
        int64_t lo = k * CHUNK, hi = lo + CHUNK < numel ? lo + CHUNK : numel;
        const float *a = xs[0], *b = xs[1];
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) out[i] = a[i] + b[i];
        for (int j = 2; j < n; j++) {
            const float *c = xs[j];
#pragma omp simd
            for (int64_t i = lo; i < hi; i++) out[i] += c[i];
        }
        if (relu) {
#pragma omp simd
            for (int64_t i = lo; i < hi; i++) out[i] = out[i] < 0.f ? 0.f : out[i];
        }
    }
}
