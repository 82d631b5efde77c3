/* Small-batch matrix products for CPU decode: y[M, N] = x[M, K] . W[N, K]^T (+ nothing else).
 *
 * W is a Linear's weight exactly as torch keeps it ([out, in], row-major), in float32, float16
 * or bfloat16; x and y are float32. Decode multiplies a few rows by every weight of the model,
 * so it is a read of the weights: each thread owns a band of output rows and streams it once,
 * four weight rows at a time, for up to four input rows at a time (16 AVX-512 accumulators),
 * converting half-precision weights to float32 in registers.
 *
 * Threads come from the OpenMP runtime torch already loaded (same soname), so torch's operators
 * and these products share one team instead of two teams spinning against each other.
 * Built on first use by engine/fastpath/kernels.py; refuses to build without AVX-512F.
 */
#include <stdint.h>
#include <omp.h>
#include <immintrin.h>

#ifndef __AVX512F__
#error "needs AVX-512F"
#endif

static inline __m512 ld_f32(const void *p, int64_t i) { return _mm512_loadu_ps((const float *)p + i); }
static inline __m512 ld_f16(const void *p, int64_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
}
static inline __m512 ld_bf16(const void *p, int64_t i) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

#define FMA4(a0, a1, a2, a3, u) \
    a0 = _mm512_fmadd_ps(u, v0, a0); a1 = _mm512_fmadd_ps(u, v1, a1); \
    a2 = _mm512_fmadd_ps(u, v2, a2); a3 = _mm512_fmadd_ps(u, v3, a3);

/* Output rows [n0, n1) for all M input rows. K % 16 == 0. */
#define BAND(NAME, LD, ESZ) \
static void NAME(int M, int K, int N, const float *x, const void *w, float *y, int n0, int n1) { \
    const char *wb = (const char *)w; \
    for (int n = n0; n < n1; n += 4) { \
        int nr = n1 - n < 4 ? n1 - n : 4; \
        const void *w0 = wb + (int64_t)n * K * ESZ; \
        const void *w1 = wb + (int64_t)(n + (nr > 1)) * K * ESZ; \
        const void *w2 = wb + (int64_t)(n + (nr > 2) * 2) * K * ESZ; \
        const void *w3 = wb + (int64_t)(n + (nr > 3) * 3) * K * ESZ; \
        for (int m0 = 0; m0 < M; m0 += 4) { \
            int mr = M - m0 < 4 ? M - m0 : 4; \
            const float *x0 = x + (int64_t)m0 * K; \
            const float *x1 = x0 + (mr > 1) * (int64_t)K, *x2 = x0 + (mr > 2) * 2 * (int64_t)K; \
            const float *x3 = x0 + (mr > 3) * 3 * (int64_t)K; \
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, \
                   a12 = a00, a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, \
                   a31 = a00, a32 = a00, a33 = a00; \
            for (int k = 0; k < K; k += 16) { \
                __m512 v0 = LD(w0, k), v1 = LD(w1, k), v2 = LD(w2, k), v3 = LD(w3, k); \
                FMA4(a00, a01, a02, a03, _mm512_loadu_ps(x0 + k)) \
                if (mr > 1) { FMA4(a10, a11, a12, a13, _mm512_loadu_ps(x1 + k)) } \
                if (mr > 2) { FMA4(a20, a21, a22, a23, _mm512_loadu_ps(x2 + k)) } \
                if (mr > 3) { FMA4(a30, a31, a32, a33, _mm512_loadu_ps(x3 + k)) } \
            } \
            float r[4][4] = { \
                {_mm512_reduce_add_ps(a00), _mm512_reduce_add_ps(a01), _mm512_reduce_add_ps(a02), _mm512_reduce_add_ps(a03)}, \
                {_mm512_reduce_add_ps(a10), _mm512_reduce_add_ps(a11), _mm512_reduce_add_ps(a12), _mm512_reduce_add_ps(a13)}, \
                {_mm512_reduce_add_ps(a20), _mm512_reduce_add_ps(a21), _mm512_reduce_add_ps(a22), _mm512_reduce_add_ps(a23)}, \
                {_mm512_reduce_add_ps(a30), _mm512_reduce_add_ps(a31), _mm512_reduce_add_ps(a32), _mm512_reduce_add_ps(a33)}}; \
            for (int i = 0; i < mr; i++) \
                for (int j = 0; j < nr; j++) y[(int64_t)(m0 + i) * N + n + j] = r[i][j]; \
        } \
    } \
}
BAND(band_f32, ld_f32, 4)
BAND(band_f16, ld_f16, 2)
BAND(band_bf16, ld_bf16, 2)

/* kind: 0 float32, 1 float16, 2 bfloat16. threads: the team size (torch.get_num_threads()). */
int wb_linear(int kind, int M, int K, int N, const float *x, const void *w, float *y, int threads) {
    if (K % 16 || M < 1 || N < 1 || kind < 0 || kind > 2) return -1;
    int quads = (N + 3) / 4;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int n0 = 4 * (int)((int64_t)quads * t / T), n1 = 4 * (int)((int64_t)quads * (t + 1) / T);
        if (n1 > N) n1 = N;
        if (n0 < n1) {
            if (kind == 0) band_f32(M, K, N, x, w, y, n0, n1);
            else if (kind == 1) band_f16(M, K, N, x, w, y, n0, n1);
            else band_bf16(M, K, N, x, w, y, n0, n1);
        }
    }
    return 0;
}
