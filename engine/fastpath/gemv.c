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
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <omp.h>
#include <immintrin.h>

#ifndef __AVX512F__
#error "needs AVX-512F"
#endif

static inline __m512 ld_f32(const void *p, int64_t i) { return _mm512_loadu_ps((const float *)p + i); }
/* An input vector loaded once into a register for all the weight rows it meets: left to itself
 * the compiler folds the load into every FMA (one load per FMA), and 8-row tiles become bound
 * by loads, not FMAs (8 rows x 3 weight rows: 27 loads for 24 FMAs). */
static inline __m512 ld_x(const float *p) {
    __m512 u = _mm512_loadu_ps(p);
    __asm__("" : "+v"(u));
    return u;
}
static inline __m512 ld_f16(const void *p, int64_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
}
static inline __m512 ld_i8(const void *p, int64_t i) {  /* int8, scaled per row afterwards */
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)p + i))));
}
static inline __m512 ld_bf16(const void *p, int64_t i) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

/* 16 accumulators -> one vector whose lane t is the sum of a[t]'s 16 lanes, in 45 shuffles and
 * adds (16 separate horizontal sums took ~130, as long as ~20 iterations of an 8-row tile's
 * loop over K = 512) */
static inline __m512 quad_sums(__m512 w, __m512 x, __m512 y, __m512 z) {
    /* each 128-bit lane: the four sums of w, x, y, z over that lane */
    __m512 wx = _mm512_add_ps(_mm512_unpacklo_ps(w, x), _mm512_unpackhi_ps(w, x));
    __m512 yz = _mm512_add_ps(_mm512_unpacklo_ps(y, z), _mm512_unpackhi_ps(y, z));
    return _mm512_add_ps(_mm512_shuffle_ps(wx, yz, 0x44), _mm512_shuffle_ps(wx, yz, 0xEE));
}
static inline __m512 sum16(__m512 a0, __m512 a1, __m512 a2, __m512 a3, __m512 a4, __m512 a5, __m512 a6,
                           __m512 a7, __m512 a8, __m512 a9, __m512 a10, __m512 a11, __m512 a12, __m512 a13,
                           __m512 a14, __m512 a15) {
    __m512 q0 = quad_sums(a0, a1, a2, a3), q1 = quad_sums(a4, a5, a6, a7);
    __m512 q2 = quad_sums(a8, a9, a10, a11), q3 = quad_sums(a12, a13, a14, a15);
    __m512 w01 = _mm512_add_ps(_mm512_shuffle_f32x4(q0, q1, 0x44), _mm512_shuffle_f32x4(q0, q1, 0xEE));
    __m512 w23 = _mm512_add_ps(_mm512_shuffle_f32x4(q2, q3, 0x44), _mm512_shuffle_f32x4(q2, q3, 0xEE));
    return _mm512_add_ps(_mm512_shuffle_f32x4(w01, w23, 0x88), _mm512_shuffle_f32x4(w01, w23, 0xDD));
}

/* the sums of n (<= 32) accumulators into out[0..n) */
static inline void sums_of(const __m512 *a, int n, float *out) {
    const __m512 z = _mm512_setzero_ps();
    for (int base = 0; base < n; base += 16) {
        __m512 v[16];
        for (int t = 0; t < 16; t++) v[t] = base + t < n ? a[base + t] : z;
        _mm512_storeu_ps(out + base, sum16(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10],
                                           v[11], v[12], v[13], v[14], v[15]));
    }
}

#define FMA4(a0, a1, a2, a3, xp) \
    { __m512 u = ld_x(xp); \
    a0 = _mm512_fmadd_ps(u, v0, a0); a1 = _mm512_fmadd_ps(u, v1, a1); \
    a2 = _mm512_fmadd_ps(u, v2, a2); a3 = _mm512_fmadd_ps(u, v3, a3); }

/* The weight rows of the tile two ahead, fetched while this one computes (`ahead` bytes on; the
 * hardware prefetcher alone left a core at ~16 GB/s on one row, and one tile ahead was slower). */
#define PREFETCH_NEXT(a, b, c, k, ahead, ESZ) \
    _mm_prefetch((const char *)(a) + (ahead) + (int64_t)(k) * (ESZ), _MM_HINT_T0); \
    _mm_prefetch((const char *)(b) + (ahead) + (int64_t)(k) * (ESZ), _MM_HINT_T0); \
    _mm_prefetch((const char *)(c) + (ahead) + (int64_t)(k) * (ESZ), _MM_HINT_T0);

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
                if (m0 == 0) { PREFETCH_NEXT(w0, w1, w2, k, 8 * (int64_t)K * ESZ, ESZ) \
                               _mm_prefetch((const char *)w3 + 8 * (int64_t)K * ESZ + (int64_t)k * ESZ, _MM_HINT_T0); } \
                __m512 v0 = LD(w0, k), v1 = LD(w1, k), v2 = LD(w2, k), v3 = LD(w3, k); \
                FMA4(a00, a01, a02, a03, x0 + k) \
                if (mr > 1) { FMA4(a10, a11, a12, a13, x1 + k) } \
                if (mr > 2) { FMA4(a20, a21, a22, a23, x2 + k) } \
                if (mr > 3) { FMA4(a30, a31, a32, a33, x3 + k) } \
            } \
            float r[16]; \
            _mm512_storeu_ps(r, sum16(a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33)); \
            for (int i = 0; i < mr; i++) \
                for (int j = 0; j < nr; j++) y[(int64_t)(m0 + i) * N + n + j] = r[4 * i + j]; \
        } \
    } \
}
BAND(band_f32, ld_f32, 4)
BAND(band_f16, ld_f16, 2)
BAND(band_bf16, ld_bf16, 2)
BAND(band_i8, ld_i8, 1)

/* 5 to 8 input rows: 3 weight rows x 8 input rows (24 accumulators) per pass, so each weight
 * vector is loaded and converted once for up to 8 rows. Four-row blocks took two passes for 5
 * rows (a 5-token verification), converting every weight twice for 5 rows' worth of FMAs. */
#define BAND38(NAME, LD, ESZ) \
static void NAME(int M, int K, int N, const float *x, const void *w, float *y, int n0, int n1) { \
    const char *wb = (const char *)w; \
    for (int n = n0; n < n1; n += 3) { \
        int nr = n1 - n < 3 ? n1 - n : 3; \
        const void *wr[3]; \
        for (int j = 0; j < 3; j++) wr[j] = wb + (int64_t)(n + (j < nr ? j : 0)) * K * ESZ; \
        for (int m0 = 0; m0 < M; m0 += 8) { \
            int mr = M - m0 < 8 ? M - m0 : 8; \
            const float *xr[8]; \
            for (int i = 0; i < 8; i++) xr[i] = x + (int64_t)(m0 + (i < mr ? i : 0)) * K; \
            __m512 acc[8][3]; \
            _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) \
                _Pragma("GCC unroll 3") for (int j = 0; j < 3; j++) acc[i][j] = _mm512_setzero_ps(); \
            for (int k = 0; k < K; k += 16) { \
                PREFETCH_NEXT(wr[0], wr[1], wr[2], k, 6 * (int64_t)K * ESZ, ESZ) \
                __m512 v0 = LD(wr[0], k), v1 = LD(wr[1], k), v2 = LD(wr[2], k); \
                _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) { \
                    __m512 u = ld_x(xr[i] + k); \
                    acc[i][0] = _mm512_fmadd_ps(u, v0, acc[i][0]); \
                    acc[i][1] = _mm512_fmadd_ps(u, v1, acc[i][1]); \
                    acc[i][2] = _mm512_fmadd_ps(u, v2, acc[i][2]); \
                } \
            } \
            float r[32]; \
            sums_of(&acc[0][0], 24, r); \
            for (int i = 0; i < mr; i++) \
                for (int j = 0; j < nr; j++) y[(int64_t)(m0 + i) * N + n + j] = r[3 * i + j]; \
        } \
    } \
}
/* exactly MR (5..7) input rows: NR weight rows x MR rows per pass, no FMA for a missing row */
#define BANDX(NAME, LD, ESZ, NR, MR) \
static void NAME(int M, int K, int N, const float *x, const void *w, float *y, int n0, int n1) { \
    (void)M; \
    const char *wb = (const char *)w; \
    const float *xr[MR]; \
    for (int i = 0; i < MR; i++) xr[i] = x + (int64_t)i * K; \
    for (int n = n0; n < n1; n += NR) { \
        int nr = n1 - n < NR ? n1 - n : NR; \
        const void *wr[NR]; \
        for (int j = 0; j < NR; j++) wr[j] = wb + (int64_t)(n + (j < nr ? j : 0)) * K * ESZ; \
        __m512 acc[MR][NR]; \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++) \
            _Pragma("GCC unroll 4") for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps(); \
        for (int k = 0; k < K; k += 16) { \
            __m512 v[NR]; \
            _Pragma("GCC unroll 4") for (int j = 0; j < NR; j++) \
                _mm_prefetch((const char *)wr[j] + 2 * NR * (int64_t)K * ESZ + (int64_t)k * ESZ, _MM_HINT_T0); \
            _Pragma("GCC unroll 4") for (int j = 0; j < NR; j++) v[j] = LD(wr[j], k); \
            _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++) { \
                __m512 u = ld_x(xr[i] + k); \
                _Pragma("GCC unroll 4") for (int j = 0; j < NR; j++) acc[i][j] = _mm512_fmadd_ps(u, v[j], acc[i][j]); \
            } \
        } \
        float r[32]; \
        sums_of(&acc[0][0], MR * NR, r); \
        for (int i = 0; i < MR; i++) \
            for (int j = 0; j < nr; j++) y[(int64_t)i * N + n + j] = r[NR * i + j]; \
    } \
}
#define BANDX_ALL(SUFFIX, NR, MR) \
    BANDX(band##SUFFIX##_f32, ld_f32, 4, NR, MR) BANDX(band##SUFFIX##_f16, ld_f16, 2, NR, MR) \
    BANDX(band##SUFFIX##_bf16, ld_bf16, 2, NR, MR) BANDX(band##SUFFIX##_i8, ld_i8, 1, NR, MR)
BANDX_ALL(45, 4, 5)
BANDX_ALL(36, 3, 6)
BANDX_ALL(37, 3, 7)

BAND38(band38_f32, ld_f32, 4)
BAND38(band38_f16, ld_f16, 2)
BAND38(band38_bf16, ld_bf16, 2)
BAND38(band38_i8, ld_i8, 1)

/* kind: 0 float32, 1 float16, 2 bfloat16, 4 int8 (the raw integer products: wb_linear_i8 scales
 * them). threads: the team size (torch.get_num_threads()). */
int wb_linear(int kind, int M, int K, int N, const float *x, const void *w, float *y, int threads) {
    if (K % 16 || M < 1 || N < 1 || kind < 0 || kind > 4 || kind == 3) return -1;
    int wide = M > 4 && M % 4 != 0;  /* 5-7 rows, 9-11, ...: eight-row passes */
    if (M > 4 && M % 8 == 0) wide = 1;
    int exact = M >= 5 && M <= 7;  /* one pass of exactly M rows */
    int step = (wide && M != 5) ? 3 : 4, groups = (N + step - 1) / step;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int n0 = step * (int)((int64_t)groups * t / T), n1 = step * (int)((int64_t)groups * (t + 1) / T);
        if (n1 > N) n1 = N;
        if (n0 < n1) {
            if (exact) {
                #define EXACT(S) { if (kind == 0) band##S##_f32(M, K, N, x, w, y, n0, n1); \
                    else if (kind == 1) band##S##_f16(M, K, N, x, w, y, n0, n1); \
                    else if (kind == 2) band##S##_bf16(M, K, N, x, w, y, n0, n1); \
                    else band##S##_i8(M, K, N, x, w, y, n0, n1); }
                if (M == 5) EXACT(45) else if (M == 6) EXACT(36) else EXACT(37)
                #undef EXACT
            } else if (wide) {
                if (kind == 0) band38_f32(M, K, N, x, w, y, n0, n1);
                else if (kind == 1) band38_f16(M, K, N, x, w, y, n0, n1);
                else if (kind == 2) band38_bf16(M, K, N, x, w, y, n0, n1);
                else band38_i8(M, K, N, x, w, y, n0, n1);
            } else if (kind == 0) band_f32(M, K, N, x, w, y, n0, n1);
            else if (kind == 1) band_f16(M, K, N, x, w, y, n0, n1);
            else if (kind == 2) band_bf16(M, K, N, x, w, y, n0, n1);
            else band_i8(M, K, N, x, w, y, n0, n1);
        }
    }
    return 0;
}

/* ---- 4-bit weights in bitsandbytes' layout (nf4, fp4):
 *   W[n, k] = code[q] * absmax[(n * K + k) / bs], q the 4-bit index of element n * K + k,
 * two per byte in row-major order, the even element in the high nibble. One 16-byte load holds
 * 32 weights; their even and odd elements come out as two vectors (shift, mask, a 16-entry table
 * lookup in one permute), so x is read de-interleaved the same way (xd, prepared once per call).
 * The block's absmax scales the table (16 values) instead of every weight. */
static const int EVEN_IDX[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
static const int ODD_IDX[16] = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};

static void deinterleave(int64_t count, const float *x, float *xd) {  /* count % 32 == 0 */
    const __m512i ev = _mm512_loadu_si512(EVEN_IDX), od = _mm512_loadu_si512(ODD_IDX);
    for (int64_t j = 0; j < count; j += 32) {
        __m512 a = _mm512_loadu_ps(x + j), b = _mm512_loadu_ps(x + j + 16);
        _mm512_storeu_ps(xd + j, _mm512_permutex2var_ps(a, ev, b));
        _mm512_storeu_ps(xd + j + 16, _mm512_permutex2var_ps(a, od, b));
    }
}

#define Q4_ROW(d, e, o, wp, c) \
    { __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(wp + (k >> 1)))); \
      e = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), c); \
      o = _mm512_permutexvar_ps(d, c); }  /* the permute reads the index's low 4 bits: no mask */
#define Q4_FMA(a0, a1, a2, a3, xp) \
    { __m512 xe = _mm512_loadu_ps(xp + k), xo = _mm512_loadu_ps(xp + k + 16); \
      a0 = _mm512_fmadd_ps(e0, xe, a0); a0 = _mm512_fmadd_ps(o0, xo, a0); \
      a1 = _mm512_fmadd_ps(e1, xe, a1); a1 = _mm512_fmadd_ps(o1, xo, a1); \
      a2 = _mm512_fmadd_ps(e2, xe, a2); a2 = _mm512_fmadd_ps(o2, xo, a2); \
      a3 = _mm512_fmadd_ps(e3, xe, a3); a3 = _mm512_fmadd_ps(o3, xo, a3); }

static void band_q4(int M, int K, int N, const float *xd, const uint8_t *w, const float *absmax,
                    const float *code, int bs, float *y, int n0, int n1) {
    const __m512 table = _mm512_loadu_ps(code);
    const int nb = K / bs;
    for (int n = n0; n < n1; n += 4) {
        int nr = n1 - n < 4 ? n1 - n : 4;
        const int64_t r1 = n + (nr > 1), r2 = n + (nr > 2) * 2, r3 = n + (nr > 3) * 3;
        const uint8_t *w0 = w + (int64_t)n * K / 2, *w1 = w + r1 * K / 2, *w2 = w + r2 * K / 2, *w3 = w + r3 * K / 2;
        const float *s0 = absmax + (int64_t)n * nb, *s1 = absmax + r1 * nb, *s2 = absmax + r2 * nb, *s3 = absmax + r3 * nb;
        for (int m0 = 0; m0 < M; m0 += 4) {
            int mr = M - m0 < 4 ? M - m0 : 4;
            const float *x0 = xd + (int64_t)m0 * K;
            const float *x1 = x0 + (mr > 1) * (int64_t)K, *x2 = x0 + (mr > 2) * 2 * (int64_t)K;
            const float *x3 = x0 + (mr > 3) * 3 * (int64_t)K;
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00,
                   a12 = a00, a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00,
                   a31 = a00, a32 = a00, a33 = a00;
            for (int blk = 0; blk < nb; blk++) {
                __m512 c0 = _mm512_mul_ps(table, _mm512_set1_ps(s0[blk])), c1 = _mm512_mul_ps(table, _mm512_set1_ps(s1[blk]));
                __m512 c2 = _mm512_mul_ps(table, _mm512_set1_ps(s2[blk])), c3 = _mm512_mul_ps(table, _mm512_set1_ps(s3[blk]));
                for (int k = blk * bs; k < (blk + 1) * bs; k += 32) {
                    if (m0 == 0 && !(k & 127)) {  /* the rows two tiles on, a line at a time */
                        _mm_prefetch((const char *)w0 + 4 * (int64_t)K + k / 2, _MM_HINT_T0);
                        _mm_prefetch((const char *)w1 + 4 * (int64_t)K + k / 2, _MM_HINT_T0);
                        _mm_prefetch((const char *)w2 + 4 * (int64_t)K + k / 2, _MM_HINT_T0);
                        _mm_prefetch((const char *)w3 + 4 * (int64_t)K + k / 2, _MM_HINT_T0);
                    }
                    __m512 e0, o0, e1, o1, e2, o2, e3, o3;
                    Q4_ROW(d0, e0, o0, w0, c0) Q4_ROW(d1, e1, o1, w1, c1)
                    Q4_ROW(d2, e2, o2, w2, c2) Q4_ROW(d3, e3, o3, w3, c3)
                    Q4_FMA(a00, a01, a02, a03, x0)
                    if (mr > 1) Q4_FMA(a10, a11, a12, a13, x1)
                    if (mr > 2) Q4_FMA(a20, a21, a22, a23, x2)
                    if (mr > 3) Q4_FMA(a30, a31, a32, a33, x3)
                }
            }
            float r[16];
            _mm512_storeu_ps(r, sum16(a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33));
            for (int i = 0; i < mr; i++)
                for (int j = 0; j < nr; j++) y[(int64_t)(m0 + i) * N + n + j] = r[4 * i + j];
        }
    }
}

/* exactly MR (5..8) input rows of a 4-bit product: 2 weight rows x MR rows per pass, so each
 * 4-bit weight is unpacked once for all of them (four-row passes unpacked it twice for a
 * 5-token verification) */
#define Q4X(NAME, MR) \
static void NAME(int M, int K, int N, const float *xd, const uint8_t *w, const float *absmax, \
                 const float *code, int bs, float *y, int n0, int n1) { \
    (void)M; \
    const __m512 table = _mm512_loadu_ps(code); \
    const int nb = K / bs; \
    for (int n = n0; n < n1; n += 2) { \
        int nr = n1 - n < 2 ? n1 - n : 2; \
        const int64_t r1 = n + (nr > 1); \
        const uint8_t *w0 = w + (int64_t)n * K / 2, *w1 = w + r1 * K / 2; \
        const float *s0 = absmax + (int64_t)n * nb, *s1 = absmax + r1 * nb; \
        __m512 acc[MR][2]; \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++) { acc[i][0] = _mm512_setzero_ps(); acc[i][1] = acc[i][0]; } \
        for (int blk = 0; blk < nb; blk++) { \
            __m512 c0 = _mm512_mul_ps(table, _mm512_set1_ps(s0[blk])), c1 = _mm512_mul_ps(table, _mm512_set1_ps(s1[blk])); \
            for (int k = blk * bs; k < (blk + 1) * bs; k += 32) { \
                __m512 e0, o0, e1, o1; \
                if (!(k & 127)) { \
                    _mm_prefetch((const char *)w0 + 2 * (int64_t)K + k / 2, _MM_HINT_T0); \
                    _mm_prefetch((const char *)w1 + 2 * (int64_t)K + k / 2, _MM_HINT_T0); \
                } \
                Q4_ROW(d0, e0, o0, w0, c0) Q4_ROW(d1, e1, o1, w1, c1) \
                _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++) { \
                    const float *xp = xd + (int64_t)i * K; \
                    __m512 xe = _mm512_loadu_ps(xp + k), xo = _mm512_loadu_ps(xp + k + 16); \
                    acc[i][0] = _mm512_fmadd_ps(o0, xo, _mm512_fmadd_ps(e0, xe, acc[i][0])); \
                    acc[i][1] = _mm512_fmadd_ps(o1, xo, _mm512_fmadd_ps(e1, xe, acc[i][1])); \
                } \
            } \
        } \
        float r[32]; \
        sums_of(&acc[0][0], MR * 2, r); \
        for (int i = 0; i < MR; i++) \
            for (int j = 0; j < nr; j++) y[(int64_t)i * N + n + j] = r[2 * i + j]; \
    } \
}
Q4X(band_q4_5, 5)
Q4X(band_q4_6, 6)
Q4X(band_q4_7, 7)
Q4X(band_q4_8, 8)

/* y[M, N] = x[M, K] . W^T for 4-bit W (above). K % bs == 0, bs % 32 == 0. xd: M * K floats of
 * scratch (x de-interleaved). */
int wb_linear_q4(int M, int K, int N, const float *x, const uint8_t *w, const float *absmax, const float *code,
                 int bs, float *y, float *xd, int threads) {
    if (bs < 32 || bs % 32 || K % bs || M < 1 || N < 1) return -1;
    deinterleave((int64_t)M * K, x, xd);
    int exact = M >= 5 && M <= 8, step = exact ? 2 : 4, groups = (N + step - 1) / step;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int n0 = step * (int)((int64_t)groups * t / T), n1 = step * (int)((int64_t)groups * (t + 1) / T);
        if (n1 > N) n1 = N;
        if (n0 < n1) {
            if (M == 5) band_q4_5(M, K, N, xd, w, absmax, code, bs, y, n0, n1);
            else if (M == 6) band_q4_6(M, K, N, xd, w, absmax, code, bs, y, n0, n1);
            else if (M == 7) band_q4_7(M, K, N, xd, w, absmax, code, bs, y, n0, n1);
            else if (M == 8) band_q4_8(M, K, N, xd, w, absmax, code, bs, y, n0, n1);
            else band_q4(M, K, N, xd, w, absmax, code, bs, y, n0, n1);
        }
    }
    return 0;
}

/* 8-bit weights in bitsandbytes' layout: W[n, k] = w[n, k] * scale[n] (int8 rows; scale =
 * SCB / 127). The integer weights convert exactly to float32; the row scale multiplies the sum. */
int wb_linear_i8(int M, int K, int N, const float *x, const int8_t *w, const float *scale, float *y, int threads) {
    int rc = wb_linear(4, M, K, N, x, w, y, threads);
    if (rc) return rc;
    for (int m = 0; m < M; m++) {
        float *ym = y + (int64_t)m * N;
        int n = 0;
        for (; n + 16 <= N; n += 16) _mm512_storeu_ps(ym + n, _mm512_mul_ps(_mm512_loadu_ps(ym + n), _mm512_loadu_ps(scale + n)));
        for (; n < N; n++) ym[n] *= scale[n];
    }
    return 0;
}

/* The sum of n floats read by `threads` threads as the products read weights: each thread a
 * contiguous band, as four streams a quarter of the band apart (the 4-row tiles' pattern), a line
 * of each per step, the lines two steps on prefetched: the read-bandwidth probe of the decode
 * roofline (engine.machine), which the products must not beat. */
double wb_read_sum(const float *x, int64_t n, int threads) {
    double total = 0.0;
    #pragma omp parallel num_threads(threads) reduction(+:total)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t lines = n / 16, l0 = lines * t / T, l1 = lines * (t + 1) / T, q = (l1 - l0) / 4;
        const float *s0 = x + l0 * 16, *s1 = s0 + q * 16, *s2 = s1 + q * 16, *s3 = s2 + q * 16;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t i = 0; i < q * 16; i += 16) {
            _mm_prefetch((const char *)(s0 + i) + 512, _MM_HINT_T0);
            _mm_prefetch((const char *)(s1 + i) + 512, _MM_HINT_T0);
            _mm_prefetch((const char *)(s2 + i) + 512, _MM_HINT_T0);
            _mm_prefetch((const char *)(s3 + i) + 512, _MM_HINT_T0);
            a0 = _mm512_add_ps(a0, _mm512_loadu_ps(s0 + i));
            a1 = _mm512_add_ps(a1, _mm512_loadu_ps(s1 + i));
            a2 = _mm512_add_ps(a2, _mm512_loadu_ps(s2 + i));
            a3 = _mm512_add_ps(a3, _mm512_loadu_ps(s3 + i));
        }
        for (int64_t l = l0 + 4 * q; l < l1; l++) a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + l * 16));
        total += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        if (t == T - 1)
            for (int64_t j = lines * 16; j < n; j++) total += x[j];
    }
    return total;
}

/* exp for x <= 0 (softmax after subtracting the max): Cephes' expf polynomial on the reduced
   argument, scaled by 2^n with scalef; ~1 ulp, as torch's vectorised exp. */
static inline __m512 exp_neg(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* Attention for a few query rows per sequence (decode, verification) over a float32 or float16
 * cache (kv_kind 0 or 1; strides in elements):
 *   o[b, i, h, :] = softmax_j(scale * q[b, h, i, :] . k[b, h / G, j, :]) . v[b, h / G, j, :]
 * over the keys query i may see: j <= L - T + i (causal) and valid[b, j] (holes), G = H / KVH.
 * q, k, v: innermost dimension contiguous, other strides in floats; valid: [B, L] bytes or NULL;
 * o: [B, T, H, D] contiguous (the layout the output projection reads). D % 16 == 0, D <= 256.
 * scratch: B*H*T*L floats (scores). A query that sees no key gets zeros. A head's T queries are
 * dealt to the threads together, heads round robin: in a batch the rows' valid lengths differ
 * (mixed requests, holes), and contiguous blocks gave one thread the long rows and the other the
 * short; one query at a time made both threads read every head's keys for a verification
 * (T = 5 over 1000 keys, 8 layers: 1.02 ms against 0.82). */
#define ATTEND(NAME, LD) \
static void NAME(int B, int H, int KVH, int T, int L, int D, float scale, \
                 const float *q, int64_t qsb, int64_t qsh, int64_t qst, \
                 const void *k, int64_t ksb, int64_t ksh, int64_t ksl, \
                 const void *v, int64_t vsb, int64_t vsh, int64_t vsl, \
                 const uint8_t *valid, float *o, float *scratch, int threads) { \
    int G = H / KVH, items = B * H * T, nv = D / 16; \
    _Pragma("omp parallel for num_threads(threads) schedule(static, T)") \
    for (int it = 0; it < items; it++) { \
        int b = it / (H * T), h = (it / T) % H, i = it % T; \
        const float *qp = q + b * qsb + h * qsh + i * qst; \
        const int64_t kp = b * ksb + (h / G) * ksh, vp = b * vsb + (h / G) * vsh;  /* element offsets */ \
        const uint8_t *ok = valid ? valid + (int64_t)b * L : 0; \
        float *s = scratch + (int64_t)it * L; \
        int last = L - T + i;  /* the last key this query sees */ \
        __m512 qv[16]; \
        for (int d = 0; d < nv; d++) qv[d] = _mm512_mul_ps(_mm512_loadu_ps(qp + 16 * d), _mm512_set1_ps(scale)); \
        float mx = -INFINITY; \
        for (int j = 0; j <= last; j++) { \
            if (ok && !ok[j]) { s[j] = -INFINITY; continue; } \
            const int64_t kj = kp + j * ksl; \
            __m512 acc = _mm512_mul_ps(qv[0], LD(k, kj)); \
            for (int d = 1; d < nv; d++) acc = _mm512_fmadd_ps(qv[d], LD(k, kj + 16 * d), acc); \
            float x = _mm512_reduce_add_ps(acc); \
            s[j] = x; \
            if (x > mx) mx = x; \
        } \
        float *op = o + (((int64_t)b * T + i) * H + h) * D; \
        if (mx == -INFINITY) {  /* nothing to attend to */ \
            for (int d = 0; d < D; d++) op[d] = 0.0f; \
            continue; \
        } \
        /* p_j = exp(s_j - max), 16 at a time (masked keys give exp(-inf) = 0) */ \
        __m512 mxv = _mm512_set1_ps(mx), sum = _mm512_setzero_ps(); \
        int j = 0; \
        for (; j + 16 <= last + 1; j += 16) { \
            __m512 p = exp_neg(_mm512_sub_ps(_mm512_loadu_ps(s + j), mxv)); \
            p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_loadu_ps(s + j), _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ), p); \
            _mm512_storeu_ps(s + j, p); \
            sum = _mm512_add_ps(sum, p); \
        } \
        if (j <= last) { \
            __mmask16 m = (__mmask16)((1u << (last + 1 - j)) - 1); \
            __m512 sj = _mm512_maskz_loadu_ps(m, s + j); \
            __m512 p = exp_neg(_mm512_sub_ps(sj, mxv)); \
            m &= _mm512_cmp_ps_mask(sj, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ); \
            p = _mm512_maskz_mov_ps(m, p); \
            _mm512_mask_storeu_ps(s + j, (__mmask16)((1u << (last + 1 - j)) - 1), p); \
            sum = _mm512_add_ps(sum, p); \
        } \
        float inv = 1.0f / _mm512_reduce_add_ps(sum); \
        __m512 ov[16]; \
        for (int d = 0; d < nv; d++) ov[d] = _mm512_setzero_ps(); \
        for (int jj = 0; jj <= last; jj++) { \
            float p = s[jj]; \
            if (p == 0.0f) continue; \
            const int64_t vj = vp + jj * vsl; \
            __m512 pv = _mm512_set1_ps(p); \
            for (int d = 0; d < nv; d++) ov[d] = _mm512_fmadd_ps(pv, LD(v, vj + 16 * d), ov[d]); \
        } \
        for (int d = 0; d < nv; d++) _mm512_storeu_ps(op + 16 * d, _mm512_mul_ps(ov[d], _mm512_set1_ps(inv))); \
    } \
}

ATTEND(attend_f32, ld_f32)
ATTEND(attend_f16, ld_f16)

int wb_attention(int B, int H, int KVH, int T, int L, int D, float scale,
                 const float *q, int64_t qsb, int64_t qsh, int64_t qst,
                 const void *k, int64_t ksb, int64_t ksh, int64_t ksl,
                 const void *v, int64_t vsb, int64_t vsh, int64_t vsl,
                 const uint8_t *valid, float *o, float *scratch, int kv_kind, int threads) {
    if (D % 16 || D > 256 || H % KVH || T > L || T < 1 || B < 1 || kv_kind < 0 || kv_kind > 1) return -1;
    if (kv_kind == 1) attend_f16(B, H, KVH, T, L, D, scale, q, qsb, qsh, qst, k, ksb, ksh, ksl, v, vsb, vsh, vsl, valid, o, scratch, threads);
    else attend_f32(B, H, KVH, T, L, D, scale, q, qsb, qsh, qst, k, ksb, ksh, ksl, v, vsb, vsh, vsl, valid, o, scratch, threads);
    return 0;
}

/* ---- one decode forward through every layer: the small steps between the products in C too */

static void rms_rows(int M, int n, float eps, const float *x, const float *w, float *out) {
    for (int m = 0; m < M; m++) {
        const float *xm = x + (int64_t)m * n;
        __m512 acc = _mm512_setzero_ps();
        for (int j = 0; j < n; j += 16) { __m512 u = _mm512_loadu_ps(xm + j); acc = _mm512_fmadd_ps(u, u, acc); }
        float r = 1.0f / sqrtf(_mm512_reduce_add_ps(acc) / (float)n + eps);
        __m512 rv = _mm512_set1_ps(r);
        for (int j = 0; j < n; j += 16)
            _mm512_storeu_ps(out + (int64_t)m * n + j,
                             _mm512_mul_ps(_mm512_loadu_ps(w + j), _mm512_mul_ps(_mm512_loadu_ps(xm + j), rv)));
    }
}

static void add_rows_into(int64_t count, float *x, const float *y) {
    int64_t j = 0;
    for (; j + 16 <= count; j += 16) _mm512_storeu_ps(x + j, _mm512_add_ps(_mm512_loadu_ps(x + j), _mm512_loadu_ps(y + j)));
    for (; j < count; j++) x[j] += y[j];
}

/* silu(a) * b over n values: a / (1 + exp(-a)), exp of a non-positive argument only */
static void silu_mul(int64_t n, const float *a, const float *b, float *out) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 u = _mm512_loadu_ps(a + j);
        __mmask16 neg = _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_LT_OQ);
        __m512 e = exp_neg(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(u)));  /* exp(-|u|) */
        __m512 sig = _mm512_div_ps(_mm512_mask_blend_ps(neg, one, e), _mm512_add_ps(one, e));
        _mm512_storeu_ps(out + j, _mm512_mul_ps(_mm512_mul_ps(u, sig), _mm512_loadu_ps(b + j)));
    }
    for (; j < n; j++) out[j] = a[j] / (1.0f + expf(-a[j])) * b[j];
}

/* table: per layer TABLE_COLS int64: w_qkv, b_qkv (0 = none), w_o, w_gu, w_down, in_norm, post_norm,
 * k buffer, v buffer, k strides (batch, head, column), v strides (batch, head, column), unused;
 * for 4-bit weights (kind 3) also the absmax of w_qkv, w_o, w_gu, w_down, the code table and the
 * block size; for 8-bit ones (kind 4) the row scales of w_qkv, w_o, w_gu, w_down there.
 * x: [B*T, hidden] float32 residual stream (row-major by sequence then token), in and out.
 * cos, sin: [B*T, D]. The T new keys and values of each row go to cache columns W..W+T-1.
 * work: float32 scratch, wb_decode_work() floats. */
#define TABLE_COLS 24
int64_t wb_decode_work(int B, int T, int W, int hidden, int H, int KVH, int D, int inter) {
    int64_t M = (int64_t)B * T;
    int64_t widest = inter > hidden ? inter : hidden;  /* de-interleaved input of a 4-bit product */
    if (H * D > widest) widest = H * D;
    return M * hidden + M * (H + 2 * KVH) * D + M * H * D + M * 2 * inter + M * inter + (int64_t)B * H * T * (W + T)
           + M * widest;
}

static int linear_slot(int kind, int M, int K, int N, const float *x, const int64_t *e, int slot, float *y,
                       float *xd, int threads) {
    if (kind == 3)
        return wb_linear_q4(M, K, N, x, (const uint8_t *)e[slot], (const float *)e[slot == 0 ? 16 : 15 + slot],
                            (const float *)e[20], (int)e[21], y, xd, threads);
    if (kind == 4)
        return wb_linear_i8(M, K, N, x, (const int8_t *)e[slot], (const float *)e[slot == 0 ? 16 : 15 + slot], y, threads);
    return wb_linear(kind, M, K, N, x, (const void *)e[slot], y, threads);
}

int wb_decode(int kind, int n_layers, const int64_t *table, int B, int T, int W, int hidden, int H, int KVH,
              int D, int inter, float eps, float scale, const float *cos, const float *sin,
              const uint8_t *valid, float *x, float *work, int kv_kind, int threads) {
    if (kv_kind < 0 || kv_kind > 1) return -1;
    if (hidden % 16 || inter % 16 || D % 16 || D > 256 || H % KVH) return -1;
    int M = B * T, nqkv = (H + 2 * KVH) * D, half = D / 2;
    float *h = work, *qkv = h + (int64_t)M * hidden, *o = qkv + (int64_t)M * nqkv;
    float *gu = o + (int64_t)M * H * D, *act = gu + (int64_t)M * 2 * inter, *scores = act + (int64_t)M * inter;
    float *xd = scores + (int64_t)B * H * T * (W + T);
    float rot[256];
    for (int l = 0; l < n_layers; l++) {
        const int64_t *e = table + TABLE_COLS * l;
        const float *b_qkv = (const float *)e[1];
        void *kb = (void *)e[7], *vb = (void *)e[8];
        rms_rows(M, hidden, eps, x, (const float *)e[5], h);
        if (linear_slot(kind, M, hidden, nqkv, h, e, 0, qkv, xd, threads)) return -2;
        for (int m = 0; m < M; m++) {
            float *row = qkv + (int64_t)m * nqkv;
            if (b_qkv) add_rows_into(nqkv, row, b_qkv);
            const float *c = cos + (int64_t)m * D, *sn = sin + (int64_t)m * D;
            for (int hh = 0; hh < H + KVH; hh++) {  /* rotate queries and keys */
                float *v = row + hh * D;
                for (int d = 0; d < half; d++) { rot[d] = -v[d + half]; rot[d + half] = v[d]; }
                for (int d = 0; d < D; d++) v[d] = v[d] * c[d] + rot[d] * sn[d];
            }
            int b = m / T, i = m % T;
            for (int g = 0; g < KVH; g++) {  /* the new keys and values into the cache */
                const float *kv_k = row + (H + g) * D, *kv_v = row + (H + KVH + g) * D;
                int64_t ko = b * e[9] + g * e[10] + (int64_t)(W + i) * e[11];
                int64_t vo = b * e[12] + g * e[13] + (int64_t)(W + i) * e[14];
                if (kv_kind == 1) {  /* float16, rounded to nearest even as torch converts */
                    uint16_t *kd = (uint16_t *)kb + ko, *vd = (uint16_t *)vb + vo;
                    for (int d = 0; d < D; d += 16) {
                        _mm256_storeu_si256((__m256i *)(kd + d), _mm512_cvtps_ph(_mm512_loadu_ps(kv_k + d), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
                        _mm256_storeu_si256((__m256i *)(vd + d), _mm512_cvtps_ph(_mm512_loadu_ps(kv_v + d), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
                    }
                } else {
                    float *kd = (float *)kb + ko, *vd = (float *)vb + vo;
                    for (int d = 0; d < D; d++) { kd[d] = kv_k[d]; vd[d] = kv_v[d]; }
                }
            }
        }
        if (wb_attention(B, H, KVH, T, W + T, D, scale, qkv, (int64_t)T * nqkv, D, nqkv,
                         kb, e[9], e[10], e[11], vb, e[12], e[13], e[14], valid, o, scores, kv_kind, threads)) return -3;
        if (linear_slot(kind, M, H * D, hidden, o, e, 2, h, xd, threads)) return -4;
        add_rows_into((int64_t)M * hidden, x, h);
        rms_rows(M, hidden, eps, x, (const float *)e[6], h);
        if (linear_slot(kind, M, hidden, 2 * inter, h, e, 3, gu, xd, threads)) return -5;
        for (int m = 0; m < M; m++)
            silu_mul(inter, gu + (int64_t)m * 2 * inter, gu + (int64_t)m * 2 * inter + inter, act + (int64_t)m * inter);
        if (linear_slot(kind, M, inter, hidden, act, e, 4, h, xd, threads)) return -6;
        add_rows_into((int64_t)M * hidden, x, h);
    }
    return 0;
}

/* ---- greedy decoding steps in one call (a draft model's k steps): at step s every row feeds
 * tokens[s][b] into cache column W + s and tokens[s + 1][b] becomes the argmax of its logits:
 * embedding lookup, wb_decode, the final norm, the output head and the argmax without returning
 * to Python. tokens: [steps + 1, B] int64, row 0 given. cos, sin: [steps, B, D], each step's
 * positions.
 * valid: [B, W + steps] bytes (the new columns valid) or NULL. embed, head: [vocab, hidden] of
 * embed_kind / head_kind (0 float32, 1 float16, 2 bfloat16); final_norm float32 [hidden]. */
static void embed_rows(int kind, const void *table, int hidden, const int64_t *ids, int B, float *x) {
    for (int b = 0; b < B; b++) {
        const char *row = (const char *)table + ids[b] * (int64_t)hidden * (kind == 0 ? 4 : 2);
        for (int j = 0; j < hidden; j += 16) {
            __m512 u = kind == 0 ? ld_f32(row, j) : kind == 1 ? ld_f16(row, j) : ld_bf16(row, j);
            _mm512_storeu_ps(x + (int64_t)b * hidden + j, u);
        }
    }
}

int wb_greedy_steps(int kind, int n_layers, const int64_t *table, int B, int W, int hidden, int H, int KVH,
                    int D, int inter, float eps, float scale, const float *cos, const float *sin,
                    const uint8_t *valid, int steps, const void *embed, int embed_kind, const float *final_norm,
                    float final_eps,
                    const void *head, int head_kind, int vocab, int64_t *tokens, int kv_kind, int threads) {
    if (steps < 1 || B < 1 || hidden % 16 || vocab < 1 || embed_kind < 0 || embed_kind > 2 || head_kind < 0 || head_kind > 2)
        return -1;
    int64_t work_n = wb_decode_work(B, 1, W + steps, hidden, H, KVH, D, inter);
    float *work = (float *)malloc(sizeof(float) * (size_t)(work_n + (int64_t)B * hidden * 2 + (int64_t)B * vocab));
    uint8_t *vs = valid ? (uint8_t *)malloc((size_t)B * (W + steps)) : 0;
    if (!work || (valid && !vs)) { free(work); free(vs); return -2; }
    float *x = work + work_n, *h = x + (int64_t)B * hidden, *logits = h + (int64_t)B * hidden;
    int rc = 0;
    for (int s = 0; s < steps && !rc; s++) {
        int L = W + s + 1;
        embed_rows(embed_kind, embed, hidden, tokens + (int64_t)s * B, B, x);
        if (vs)  /* this step's mask: the first L columns of each row, rows L apart */
            for (int b = 0; b < B; b++) memcpy(vs + (int64_t)b * L, valid + (int64_t)b * (W + steps), (size_t)L);
        rc = wb_decode(kind, n_layers, table, B, 1, W + s, hidden, H, KVH, D, inter, eps, scale,
                       cos + (int64_t)s * B * D, sin + (int64_t)s * B * D, vs, x, work, kv_kind, threads);
        if (rc) break;
        rms_rows(B, hidden, final_eps, x, final_norm, h);
        rc = wb_linear(head_kind, B, hidden, vocab, h, head, logits, threads);
        for (int b = 0; b < B && !rc; b++) {
            const float *lb = logits + (int64_t)b * vocab;
            int best = 0;
            for (int j = 1; j < vocab; j++) if (lb[j] > lb[best]) best = j;  /* the first maximum, as torch */
            tokens[(int64_t)(s + 1) * B + b] = best;
        }
    }
    free(work);
    free(vs);
    return rc;
}
