/* Batch normalisation over channels-last fp32 maps, seen as an (M, C) row-major matrix (M = N*H*W
 * rows, one channel per column): the training forward (statistics, normalise, activation) and the
 * backward, each in the fewest passes over the map, the activation fused into the normalising pass.
 *
 * Why our own: ATen's batch norm makes two passes forward and its activation a third, and the
 * backward its own; on a small ResNet those passes over maps that no longer sit in the cache are a
 * quarter of a CPU training step. Called through ctypes by kernels/reference/batchnorm.py, which
 * keeps ATen's kernels for everything these do not take (other layouts and dtypes, float64).
 *
 * Threads: OpenMP, the same runtime as torch's (this library is linked against libgomp.so.1, which
 * resolves to the one torch has already loaded), with the thread count given by the caller. The rows
 * are cut into blocks of BLOCK rows whatever the thread count; each block's sums are kept apart and
 * added in block order, so the results are the same bits on any number of threads (ATen's
 * channels-last kernels split by thread, and their sums change with the count).
 * Sums: 64-row float partials added into double accumulators, the values shifted by the channel's
 * first value (the shifted-data variance, robust when the mean is large against the spread).
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 64
#define BLOCK 512   /* rows per independently summed block (a multiple of ROWS) */

enum { ACT_NONE = 0, ACT_RELU = 1 };

/* relu as ATen's clamp_min(x, 0): NaN and -0.0 pass through unchanged. */
static inline float act_apply(float v, int act) { return (act == ACT_RELU && v < 0.f) ? 0.f : v; }

/* Sum of (x - k) and (x - k)^2 per channel over rows [lo, hi). */
static void shifted_moments(const float *x, int64_t C, int64_t lo, int64_t hi, const float *k,
                            double *s, double *q, float *fs, float *fq) {
    for (int64_t r0 = lo; r0 < hi; r0 += ROWS) {
        int64_t r1 = r0 + ROWS < hi ? r0 + ROWS : hi;
        memset(fs, 0, sizeof(float) * C);
        memset(fq, 0, sizeof(float) * C);
        for (int64_t r = r0; r < r1; r++) {
            const float *xr = x + r * C;
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                float d = xr[c] - k[c];
                fs[c] += d;
                fq[c] += d * d;
            }
        }
        for (int64_t c = 0; c < C; c++) {
            s[c] += fs[c];
            q[c] += fq[c];
        }
    }
}

/* Sum of dz and of dz * (x - mean) per channel over rows [lo, hi); dz = dy, or dy where y > 0 when
 * y is given (relu's backward fused in: dy where the output was positive, as ATen's threshold_backward),
 * and dz itself written to dz_out when given (a residual's gradient). */
static void grad_sums(const float *dy, const float *y, const float *x, const float *mean, int64_t C,
                      int64_t lo, int64_t hi, double *s, double *q, float *fs, float *fq, float *dz_out) {
    for (int64_t r0 = lo; r0 < hi; r0 += ROWS) {
        int64_t r1 = r0 + ROWS < hi ? r0 + ROWS : hi;
        memset(fs, 0, sizeof(float) * C);
        memset(fq, 0, sizeof(float) * C);
        for (int64_t r = r0; r < r1; r++) {
            const float *dr = dy + r * C, *xr = x + r * C, *yr = y ? y + r * C : 0;
            float *zr = dz_out ? dz_out + r * C : 0;
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                float d = (yr && !(yr[c] > 0.f)) ? 0.f : dr[c];
                if (zr) zr[c] = d;
                fs[c] += d;
                fq[c] += d * (xr[c] - mean[c]);
            }
        }
        for (int64_t c = 0; c < C; c++) {
            s[c] += fs[c];
            q[c] += fq[c];
        }
    }
}

/* Per-block double sums in `work` (2*C per block, block order), added up into s and q. */
static void reduce_blocks(const double *work, int64_t nb, int64_t C, double *s, double *q) {
    for (int64_t c = 0; c < C; c++) {
        double a = 0, b = 0;
        for (int64_t k = 0; k < nb; k++) {
            a += work[(size_t)2 * C * k + c];
            b += work[(size_t)2 * C * k + C + c];
        }
        s[c] = a;
        q[c] = b;
    }
}

/* Per-channel sums s and q over all M rows: block j of BLOCK rows summed into its own 2*C slots of
 * `work` (on any thread), the blocks then added in order. With `mask_or_null`/`ref` as below:
 * moments (grad == 0): sums of a - ref and (a - ref)^2; gradient sums (grad == 1): of dz and
 * dz * (b - ref), dz = a masked by relu's output `mask_or_null` when given, and written to `dz_out`
 * when given. Returns 0, or -1 when a thread's buffer could not be allocated. */
static int block_sums(int grad, const float *a, const float *b, const float *mask_or_null, const float *ref,
                      float *dz_out, int64_t M, int64_t C, int T, double *work, double *s, double *q) {
    int64_t nb = (M + BLOCK - 1) / BLOCK;
    int failed = 0;
#pragma omp parallel num_threads(T)
    {
        float *f = malloc(sizeof(float) * 2 * C);
        if (!f) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t j = 0; j < nb; j++) {
            if (!f) continue;
            int64_t lo = j * BLOCK, hi = lo + BLOCK < M ? lo + BLOCK : M;
            double *ws = work + (size_t)2 * C * j, *wq = ws + C;
            if (grad)
                grad_sums(a, mask_or_null, b, ref, C, lo, hi, ws, wq, f, f + C, dz_out);
            else
                shifted_moments(a, C, lo, hi, ref, ws, wq, f, f + C);
        }
        free(f);
    }
    if (failed) return -1;
    reduce_blocks(work, nb, C, s, q);
    return 0;
}

/* Training forward. Outputs y (M, C), and per channel mean, biased variance and invstd =
 * 1/sqrt(var + eps). y = act((x - mean) * invstd * scale + shift [+ res]), computed as x * a + b with
 * a = scale * invstd and b = shift - mean * a (as ATen's kernel), rounded to float before the residual
 * `res` (NULL: none) is added, as a separate add would see it. Returns 0, or -1 when out of memory. */
int alx_bn_forward(const float *x, const float *res, int64_t M, int64_t C, const float *scale, const float *shift,
                   double eps, int act, int threads, float *y, float *mean, float *var, float *invstd) {
    int T = threads > 0 ? threads : 1;
    int64_t nb = (M + BLOCK - 1) / BLOCK;
    double *work = calloc((size_t)2 * C * nb + 2 * (size_t)C, sizeof(double));
    float *coef = malloc(sizeof(float) * 2 * C);
    float *k = malloc(sizeof(float) * C);
    if (!work || !coef || !k) {
        free(work); free(coef); free(k);
        return -1;
    }
    memcpy(k, x, sizeof(float) * C);   /* the shift: row 0 */
    double *s = work + (size_t)2 * C * nb, *q = s + C;
    if (block_sums(0, x, 0, 0, k, 0, M, C, T, work, s, q)) {
        free(work); free(coef); free(k);
        return -1;
    }
    float *a = coef, *b = coef + C;
    for (int64_t c = 0; c < C; c++) {
        double d = s[c] / (double)M;                    /* mean - k */
        double v = q[c] / (double)M - d * d;
        if (v < 0) v = 0;
        double m = (double)k[c] + d;
        float is = (float)(1.0 / sqrt(v + eps));
        mean[c] = (float)m;
        var[c] = (float)v;
        invstd[c] = is;
        a[c] = scale[c] * is;
        b[c] = shift[c] - mean[c] * a[c];
    }
#pragma omp parallel for num_threads(T) schedule(static)
    for (int64_t r = 0; r < M; r++) {
        const float *xr = x + r * C, *rr = res ? res + r * C : 0;
        float *yr = y + r * C;
        if (rr) {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                float v = xr[c] * a[c] + b[c];
                yr[c] = act_apply(v + rr[c], act);
            }
        } else {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) yr[c] = act_apply(xr[c] * a[c] + b[c], act);
        }
    }
    free(work); free(coef); free(k);
    return 0;
}

/* Backward from the output gradient dy (and, for a fused relu, the output y; else NULL), the input x
 * and the saved mean and invstd. dshift = sum dz, dscale = sum dz * xhat, and
 * dx = scale * invstd / M * (M * dz - dshift - xhat * dscale), xhat = (x - mean) * invstd, written
 * as dx = dz * a + (x - mean) * b + e per channel (x - mean first: no cancellation of two large terms).
 * With dz_out (a fused residual's gradient; NULL: none) and y, the first pass writes dz there and the
 * second reads it instead of dy and y (one stream fewer). Returns 0, or -1 when out of memory. */
int alx_bn_backward(const float *dy, const float *y, const float *x, int64_t M, int64_t C,
                    const float *scale, const float *mean, const float *invstd, int threads,
                    float *dx, float *dscale, float *dshift, float *dz_out) {
    int T = threads > 0 ? threads : 1;
    int64_t nb = (M + BLOCK - 1) / BLOCK;
    double *work = calloc((size_t)2 * C * nb + 2 * (size_t)C, sizeof(double));
    float *coef = malloc(sizeof(float) * 3 * C);
    if (!work || !coef) {
        free(work); free(coef);
        return -1;
    }
    double *s = work + (size_t)2 * C * nb, *q = s + C;
    if (block_sums(1, dy, x, y, mean, y ? dz_out : 0, M, C, T, work, s, q)) {
        free(work); free(coef);
        return -1;
    }
    float *a = coef, *b = coef + C, *e = coef + 2 * C;
    for (int64_t c = 0; c < C; c++) {
        double is = invstd[c], g = scale[c];
        double ds = s[c], dsc = q[c] * is;                /* sum dz, sum dz * xhat */
        dshift[c] = (float)ds;
        dscale[c] = (float)dsc;
        /* dx = g*is*dz - g*is/M*ds - g*is^2/M*dsc*(x - mean) */
        double k1 = g * is, k2 = g * is * is * dsc / (double)M;
        a[c] = (float)k1;
        b[c] = (float)(-k2);
        e[c] = (float)(-k1 * ds / (double)M);
    }
    if (y && dz_out) {   /* dz is written: read it instead of dy and relu's output */
        dy = dz_out;
        y = 0;
    }
#pragma omp parallel for num_threads(T) schedule(static)
    for (int64_t r = 0; r < M; r++) {
        const float *dr = dy + r * C, *xr = x + r * C, *yr = y ? y + r * C : 0;
        float *o = dx + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            float d = (yr && !(yr[c] > 0.f)) ? 0.f : dr[c];
            o[c] = d * a[c] + (xr[c] - mean[c]) * b[c] + e[c];
        }
    }
    free(work); free(coef);
    return 0;
}
