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

/* Speed: a channel's running sums live in registers across the rows of a group, not in memory (a
 * store and a reload per row, whose chain, not the memory, bounded the first version: 3x slower than a
 * plain sum over the same map). Channels go in chunks of up to VMAX vectors of 16 floats, the width a
 * compile-time constant in each specialised copy (GCC's vector extensions: one AVX-512 register per
 * vector, two AVX2 ones elsewhere); a chunk's leftover channels (C not a multiple of 16) take the
 * scalar loops. Every channel's arithmetic, and its order, is the same on either path. */
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t i16v __attribute__((vector_size(64)));
#define VMAX 4
#define VW 16

static inline v16 vload(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(float *p, v16 v) { memcpy(p, &v, sizeof v); }

/* v where keep is all ones, else +0.0 (a NaN kept stays NaN) */
static inline v16 vkeep(v16 v, i16v keep) { return (v16)((i16v)v & keep); }

/* relu as ATen's clamp_min(x, 0): NaN and -0.0 pass through unchanged. */
static inline float act_apply(float v, int act) { return (act == ACT_RELU && v < 0.f) ? 0.f : v; }

static inline v16 vact(v16 v, int act) { return act == ACT_RELU ? vkeep(v, ~(i16v)(v < 0.f)) : v; }

/* Sums over rows [lo, hi) of channels [c0, c0 + 16 NV), NV a constant where it is inlined:
 * moments (grad == 0): of a - ref and (a - ref)^2; gradient sums (grad == 1): of dz and dz * (b - ref),
 * dz = a where mask > 0 (mask given) else a, stored to dz_out when given. ROWS-row float partials added
 * into the double sums s and q. */
static inline __attribute__((always_inline)) void sums_vec(int grad, int NV, const float *a, const float *b,
                                                           const float *mask, const float *ref, float *dz_out,
                                                           int64_t C, int64_t c0, int64_t lo, int64_t hi,
                                                           double *s, double *q) {
    v16 k[VMAX], fs[VMAX], fq[VMAX];
    for (int j = 0; j < NV; j++) k[j] = vload(ref + c0 + VW * j);
    for (int64_t r0 = lo; r0 < hi; r0 += ROWS) {
        int64_t r1 = r0 + ROWS < hi ? r0 + ROWS : hi;
        for (int j = 0; j < NV; j++) fs[j] = fq[j] = (v16){0};
        for (int64_t r = r0; r < r1; r++) {
            int64_t o = r * C + c0;
            for (int j = 0; j < NV; j++) {
                int64_t i = o + VW * j;
                if (grad) {
                    v16 d = vload(a + i);
                    if (mask) d = vkeep(d, (i16v)(vload(mask + i) > 0.f));
                    if (dz_out) vstore(dz_out + i, d);
                    fs[j] += d;
                    fq[j] += d * (vload(b + i) - k[j]);
                } else {
                    v16 d = vload(a + i) - k[j];
                    fs[j] += d;
                    fq[j] += d * d;
                }
            }
        }
        for (int j = 0; j < NV; j++)
            for (int l = 0; l < VW; l++) {
                s[c0 + VW * j + l] += fs[j][l];
                q[c0 + VW * j + l] += fq[j][l];
            }
    }
}

/* The same sums for channels [c0, c1) one at a time (a chunk's leftover channels). */
static void sums_scalar(int grad, const float *a, const float *b, const float *mask, const float *ref,
                        float *dz_out, int64_t C, int64_t c0, int64_t c1, int64_t lo, int64_t hi, double *s,
                        double *q) {
    float fs[VW], fq[VW];
    for (int64_t r0 = lo; r0 < hi; r0 += ROWS) {
        int64_t r1 = r0 + ROWS < hi ? r0 + ROWS : hi;
        for (int64_t c = c0; c < c1; c++) fs[c - c0] = fq[c - c0] = 0.f;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t c = c0; c < c1; c++) {
                int64_t i = r * C + c;
                if (grad) {
                    float d = (mask && !(mask[i] > 0.f)) ? 0.f : a[i];
                    if (dz_out) dz_out[i] = d;
                    fs[c - c0] += d;
                    fq[c - c0] += d * (b[i] - ref[c]);
                } else {
                    float d = a[i] - ref[c];
                    fs[c - c0] += d;
                    fq[c - c0] += d * d;
                }
            }
        for (int64_t c = c0; c < c1; c++) {
            s[c] += fs[c - c0];
            q[c] += fq[c - c0];
        }
    }
}

/* The sums of one block of rows over all channels, chunk by chunk. */
static void block_sums_rows(int grad, const float *a, const float *b, const float *mask, const float *ref,
                            float *dz_out, int64_t C, int64_t lo, int64_t hi, double *s, double *q) {
    for (int64_t c0 = 0; c0 < C; c0 += VW * VMAX) {
        int64_t w = C - c0 < VW * VMAX ? C - c0 : VW * VMAX;
        int nv = (int)(w / VW);
        switch (nv) {   /* a constant width in each copy: the sums stay in registers */
        case 4: sums_vec(grad, 4, a, b, mask, ref, dz_out, C, c0, lo, hi, s, q); break;
        case 3: sums_vec(grad, 3, a, b, mask, ref, dz_out, C, c0, lo, hi, s, q); break;
        case 2: sums_vec(grad, 2, a, b, mask, ref, dz_out, C, c0, lo, hi, s, q); break;
        case 1: sums_vec(grad, 1, a, b, mask, ref, dz_out, C, c0, lo, hi, s, q); break;
        default: break;
        }
        if (w % VW)
            sums_scalar(grad, a, b, mask, ref, dz_out, C, c0 + VW * nv, c0 + w, lo, hi, s, q);
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
 * when given. */
static void block_sums(int grad, const float *a, const float *b, const float *mask_or_null, const float *ref,
                      float *dz_out, int64_t M, int64_t C, int T, double *work, double *s, double *q) {
    int64_t nb = (M + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(T) schedule(static)
    for (int64_t j = 0; j < nb; j++) {
        int64_t lo = j * BLOCK, hi = lo + BLOCK < M ? lo + BLOCK : M;
        double *ws = work + (size_t)2 * C * j, *wq = ws + C;
        block_sums_rows(grad, a, b, mask_or_null, ref, dz_out, C, lo, hi, ws, wq);
    }
    reduce_blocks(work, nb, C, s, q);
}

/* Elementwise passes over rows [lo, hi): y = act(x * ca + cb [+ res]) (forward, apply == 1) or
 * dx = d * ca + (x - mean) * cb + ce with d = dy masked by relu's output `mask` (backward, apply == 0),
 * channels in register-resident chunks as the sums above. */
static inline __attribute__((always_inline)) void rows_vec(int apply, int NV, const float *x, const float *d_in,
                                                           const float *mask, const float *res, const float *ca,
                                                           const float *cb, const float *ce, const float *mean,
                                                           int act, float *out, int64_t C, int64_t c0, int64_t lo,
                                                           int64_t hi) {
    v16 va[VMAX], vb[VMAX], ve[VMAX], vm[VMAX];
    for (int j = 0; j < NV; j++) {
        int64_t c = c0 + VW * j;
        va[j] = vload(ca + c);
        vb[j] = vload(cb + c);
        if (!apply) {
            ve[j] = vload(ce + c);
            vm[j] = vload(mean + c);
        }
    }
    for (int64_t r = lo; r < hi; r++) {
        int64_t o = r * C + c0;
        for (int j = 0; j < NV; j++) {
            int64_t i = o + VW * j;
            if (apply) {
                v16 v = vload(x + i) * va[j] + vb[j];
                if (res) v = v + vload(res + i);
                vstore(out + i, vact(v, act));
            } else {
                v16 g = vload(d_in + i);
                if (mask) g = vkeep(g, (i16v)(vload(mask + i) > 0.f));
                vstore(out + i, g * va[j] + (vload(x + i) - vm[j]) * vb[j] + ve[j]);
            }
        }
    }
}

static void rows_scalar(int apply, const float *x, const float *d_in, const float *mask, const float *res,
                        const float *ca, const float *cb, const float *ce, const float *mean, int act, float *out,
                        int64_t C, int64_t c0, int64_t c1, int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; r++)
        for (int64_t c = c0; c < c1; c++) {
            int64_t i = r * C + c;
            if (apply) {
                float v = x[i] * ca[c] + cb[c];
                if (res) v = v + res[i];
                out[i] = act_apply(v, act);
            } else {
                float g = (mask && !(mask[i] > 0.f)) ? 0.f : d_in[i];
                out[i] = g * ca[c] + (x[i] - mean[c]) * cb[c] + ce[c];
            }
        }
}

static void elementwise_rows(int apply, const float *x, const float *d_in, const float *mask, const float *res,
                             const float *ca, const float *cb, const float *ce, const float *mean, int act,
                             float *out, int64_t M, int64_t C, int T) {
    int64_t nb = (M + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(T) schedule(static)
    for (int64_t j = 0; j < nb; j++) {
        int64_t lo = j * BLOCK, hi = lo + BLOCK < M ? lo + BLOCK : M;
        for (int64_t c0 = 0; c0 < C; c0 += VW * VMAX) {
            int64_t w = C - c0 < VW * VMAX ? C - c0 : VW * VMAX;
            int nv = (int)(w / VW);
            switch (nv) {
            case 4: rows_vec(apply, 4, x, d_in, mask, res, ca, cb, ce, mean, act, out, C, c0, lo, hi); break;
            case 3: rows_vec(apply, 3, x, d_in, mask, res, ca, cb, ce, mean, act, out, C, c0, lo, hi); break;
            case 2: rows_vec(apply, 2, x, d_in, mask, res, ca, cb, ce, mean, act, out, C, c0, lo, hi); break;
            case 1: rows_vec(apply, 1, x, d_in, mask, res, ca, cb, ce, mean, act, out, C, c0, lo, hi); break;
            default: break;
            }
            if (w % VW)
                rows_scalar(apply, x, d_in, mask, res, ca, cb, ce, mean, act, out, C, c0 + VW * nv, c0 + w, lo, hi);
        }
    }
}

/* Training forward. Outputs y (M, C), and per channel mean, biased variance and invstd =
 * 1/sqrt(var + eps). y = act((x - mean) * invstd * scale + shift [+ res]), computed as x * a + b with
 * a = scale * invstd and b = shift - mean * a (as ATen's kernel), rounded to float before the residual
 * `res` (NULL: none) is added, as a separate add would see it. With running_mean (else NULL), also the
 * new running statistics. Returns 0, or -1 when out of memory. */
int alx_bn_forward(const float *x, const float *res, int64_t M, int64_t C, const float *scale, const float *shift,
                   double eps, int act, int threads, float *y, float *mean, float *var, float *invstd,
                   const float *running_mean, const float *running_var, double momentum, float *new_mean,
                   float *new_var) {
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
    block_sums(0, x, 0, 0, k, 0, M, C, T, work, s, q);
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
    elementwise_rows(1, x, 0, 0, res, a, b, 0, 0, act, y, M, C, T);
    if (running_mean) {
        /* (1 - m) * running + m * batch, the variance unbiased (M / (M - 1), M > 1 here), each product
         * and sum rounded to float in this order: ATen's ops on fp32 tensors with Python scalars, bit
         * for bit (kernels/reference/batchnorm.py `_running`, which the other paths still call) */
        float keep = (float)(1.0 - momentum), take = (float)momentum;
        float unbias = (float)((double)M / (double)(M > 1 ? M - 1 : 1));
        for (int64_t c = 0; c < C; c++) {
            float old_m = keep * running_mean[c], new_m = take * mean[c];
            new_mean[c] = old_m + new_m;
            float old_v = keep * running_var[c], new_v = (take * var[c]) * unbias;
            new_var[c] = old_v + new_v;
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
    block_sums(1, dy, x, y, mean, y ? dz_out : 0, M, C, T, work, s, q);
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
    elementwise_rows(0, x, dy, y, 0, a, b, e, mean, ACT_NONE, dx, M, C, T);
    free(work); free(coef);
    return 0;
}
