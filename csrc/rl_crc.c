/* rl_crc.c -- CRC32C. See rl_crc.h. */
#include "rl_crc.h"
#include "rl_os.h"

#include <string.h>

#define CRC_POLY 0x82F63B78u   /* 0x1EDC6F41 bit-reflected */

int rl_crc32c_force_level;

/* ------------------------------------------------------------------------ */
/* portable: slicing-by-8                                                     */
/* ------------------------------------------------------------------------ */
static uint32_t crc_table[8][256];
static int crc_table_ready;

static void crc_table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (CRC_POLY & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
    rl_atomic_store(&crc_table_ready, 1, RL_RELEASE);
}

/* The raw register update (no pre/post inversion), as every path below. */
static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n) {
    if (!rl_atomic_load(&crc_table_ready, RL_ACQUIRE)) crc_table_init();  /* idempotent */
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= c;
        c = crc_table[7][v & 0xFF] ^ crc_table[6][(v >> 8) & 0xFF] ^
            crc_table[5][(v >> 16) & 0xFF] ^ crc_table[4][(v >> 24) & 0xFF] ^
            crc_table[3][(v >> 32) & 0xFF] ^ crc_table[2][(v >> 40) & 0xFF] ^
            crc_table[1][(v >> 48) & 0xFF] ^ crc_table[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
    return c;
}

/* Copy and checksum in steps that stay in the L1/L2 cache between the two
 * passes, for the paths that cannot fuse them. */
static uint32_t copy_then_crc(uint32_t c, uint8_t *dst, const uint8_t *src, size_t n,
                              uint32_t (*crc)(uint32_t, const uint8_t *, size_t)) {
    while (n) {
        size_t step = n < 16384 ? n : 16384;
        memcpy(dst, src, step);
        c = crc(c, dst, step);
        dst += step;
        src += step;
        n -= step;
    }
    return c;
}

#if defined(RL_HAVE_SSE42_CRC)   /* x86-64 with gcc, clang or MSVC: see rl_os.h */
#include <nmmintrin.h>
/* The AVX-512 folding below is written for gcc/clang (target attributes);
 * MSVC gets the SSE4.2 path. RL_CRC_NO_FOLD builds that configuration with
 * gcc/clang, for testing (.ci/run stage 3). */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(RL_CRC_NO_FOLD)
#define CRC_FOLD 1
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------ */
/* SSE4.2: the crc32 instruction in three interleaved streams                */
/* ------------------------------------------------------------------------ */
/* The instruction has a latency of 3 cycles and a throughput of 1, so three
 * independent streams keep it busy; they are joined by multiplying the
 * earlier streams' CRCs by x^(8*len) mod P with precomputed tables. After
 * Mark Adler's crc32c.c. */
#define CRC_LONG 8192
#define CRC_SHORT 256
static uint32_t crc_long[4][256], crc_short[4][256];

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1) sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) square[n] = gf2_times(mat, mat[n]);
}

/* The operator that appends len zero bytes to a CRC. */
static void crc_zeros_op(uint32_t *even, size_t len) {
    uint32_t odd[32], row = 1;
    odd[0] = CRC_POLY;
    for (int n = 1; n < 32; n++) { odd[n] = row; row <<= 1; }
    gf2_square(even, odd);   /* 2 zero bits */
    gf2_square(odd, even);   /* 4 zero bits */
    do {                      /* each square doubles the zero bits: 8, 16, ... */
        gf2_square(even, odd);
        len >>= 1;
        if (len == 0) return;
        gf2_square(odd, even);
        len >>= 1;
    } while (len);
    for (int n = 0; n < 32; n++) even[n] = odd[n];
}

static void crc_zeros(uint32_t zeros[][256], size_t len) {
    uint32_t op[32];
    crc_zeros_op(op, len);
    for (uint32_t n = 0; n < 256; n++) {
        zeros[0][n] = gf2_times(op, n);
        zeros[1][n] = gf2_times(op, n << 8);
        zeros[2][n] = gf2_times(op, n << 16);
        zeros[3][n] = gf2_times(op, n << 24);
    }
}

static inline uint32_t crc_shift(uint32_t zeros[][256], uint32_t crc) {
    return zeros[0][crc & 0xFF] ^ zeros[1][(crc >> 8) & 0xFF] ^ zeros[2][(crc >> 16) & 0xFF] ^
           zeros[3][crc >> 24];
}

/* Consume whole groups of three blk-byte blocks from p, each block in its
 * own stream, and fold the three CRCs into *c0. */
RL_TARGET_SSE42 static const uint8_t *crc_hw_3way(uint64_t *c0, const uint8_t *p,
                                                                    size_t *n, size_t blk,
                                                                    uint32_t zeros[][256]) {
    while (*n >= 3 * blk) {
        uint64_t a = *c0, b = 0, c = 0, v0, v1, v2;
        const uint8_t *end = p + blk;
        do {
            memcpy(&v0, p, 8);
            memcpy(&v1, p + blk, 8);
            memcpy(&v2, p + 2 * blk, 8);
            a = _mm_crc32_u64(a, v0);
            b = _mm_crc32_u64(b, v1);
            c = _mm_crc32_u64(c, v2);
            p += 8;
        } while (p < end);
        a = crc_shift(zeros, (uint32_t)a) ^ (uint32_t)b;
        *c0 = crc_shift(zeros, (uint32_t)a) ^ (uint32_t)c;
        p += 2 * blk;
        *n -= 3 * blk;
    }
    return p;
}

/* Short inputs (headers, small frames, tails): one stream. */
RL_TARGET_SSE42 static uint32_t crc_hw_short(uint32_t c, const uint8_t *p,
                                                               size_t n) {
    uint64_t c64 = c, v;
    while (n >= 8) {
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--) c = _mm_crc32_u8(c, *p++);
    return c;
}

RL_TARGET_SSE42 static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n) {
    if (n < 3 * CRC_SHORT) return crc_hw_short(c, p, n);
    uint64_t c0 = c;
    p = crc_hw_3way(&c0, p, &n, CRC_LONG, crc_long);
    p = crc_hw_3way(&c0, p, &n, CRC_SHORT, crc_short);
    return crc_hw_short((uint32_t)c0, p, n);
}

#if defined(CRC_FOLD)
/* ------------------------------------------------------------------------ */
/* carry-less multiplication: folding                                         */
/* ------------------------------------------------------------------------ */
/* A 16-byte block loaded little-endian holds, at bit k, the coefficient of
 * x^(127-k) (reflected order: earlier bytes are higher powers). Let X be an
 * accumulator congruent (mod P) to all the data up to the end of its block.
 * Moving it F bytes further along means multiplying by x^(8F): with X split
 * into its low lane A (the earlier 8 bytes, so X = A*x^64 + B),
 *     X * x^(8F) = A * x^(64+8F) + B * x^(8F)
 *               == A * (x^(64+8F) mod P) + B * (x^(8F) mod P)      (mod P),
 * two 64x32-bit carry-less products. A constant c(x) stored as
 * (reflected32(c) << 32) has the coefficient of x^(63-j) at bit j, and the
 * product of two such reflected operands lands one bit short of the
 * block's layout, so the constants are taken for exponents one lower:
 * k(F) = { lo: x^(64+8F-1) mod P, hi: x^(8F-1) mod P }.
 * The initial CRC register is XORed into the first four bytes (that is
 * exactly what the register means). Once folded to a single 16-byte block,
 * that block is just data congruent to the whole prefix: the crc32
 * instruction finishes it and the tail from a zero register. */
static uint64_t xpow_mod(unsigned e) {   /* x^e mod P, reflected, as the clmul lane */
    uint32_t r = 0x80000000u;              /* x^0 */
    while (e--) r = (r >> 1) ^ (CRC_POLY & (0u - (r & 1u)));
    return (uint64_t)r << 32;
}

/* fold_k[F/16] for F = 16..256 bytes */
static uint64_t fold_k[17][2];

static void fold_init(void) {
    for (unsigned i = 1; i <= 16; i++) {
        fold_k[i][0] = xpow_mod(64 + 8 * 16 * i - 1);
        fold_k[i][1] = xpow_mod(8 * 16 * i - 1);
    }
}

#define TARGET_CLMUL __attribute__((target("sse4.2,pclmul")))
#define TARGET_AVX512 __attribute__((target("sse4.2,pclmul,avx512f,avx512vl,vpclmulqdq")))

TARGET_CLMUL static inline __m128i k128(unsigned bytes) {
    return _mm_set_epi64x((long long)fold_k[bytes / 16][1], (long long)fold_k[bytes / 16][0]);
}

TARGET_CLMUL static inline __m128i fold128(__m128i x, __m128i k) {
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

/* Finish a folded block and the tail (< 16 bytes, copied too when dst). */
TARGET_CLMUL static uint32_t fold_finish(__m128i x, uint8_t *dst, const uint8_t *p, size_t n) {
    uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(x));
    c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(x, 1));
    if (dst) memcpy(dst, p, n);
    return crc_hw_short((uint32_t)c, p, n);
}

TARGET_AVX512 static inline __m512i k512(unsigned bytes) {
    return _mm512_broadcast_i32x4(k128(bytes));
}

TARGET_AVX512 static inline __m512i fold512(__m512i x, __m512i k) {
    return _mm512_xor_si512(_mm512_clmulepi64_epi128(x, k, 0x00),
                            _mm512_clmulepi64_epi128(x, k, 0x11));
}

/* n >= 256. Four 64-byte accumulators, each four independent 16-byte lanes. */
TARGET_AVX512 static inline __attribute__((always_inline)) uint32_t
crc_fold_avx512(uint32_t c, uint8_t *dst, const uint8_t *p, size_t n) {
    __m512i z[4];
    for (int i = 0; i < 4; i++) {
        z[i] = _mm512_loadu_si512((const void *)(p + 64 * i));
        if (dst) _mm512_storeu_si512((void *)(dst + 64 * i), z[i]);
    }
    z[0] = _mm512_xor_si512(z[0], _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)c)));
    p += 256;
    n -= 256;
    if (dst) dst += 256;
    const __m512i k = k512(256);
    while (n >= 256) {
        for (int i = 0; i < 4; i++) {
            __m512i v = _mm512_loadu_si512((const void *)(p + 64 * i));
            if (dst) _mm512_storeu_si512((void *)(dst + 64 * i), v);
            z[i] = _mm512_xor_si512(fold512(z[i], k), v);
        }
        p += 256;
        n -= 256;
        if (dst) dst += 256;
    }
    __m512i y = z[3];
    for (int i = 0; i < 3; i++) y = _mm512_xor_si512(y, fold512(z[i], k512(64 * (3 - (unsigned)i))));
    const __m512i k64 = k512(64);
    while (n >= 64) {
        __m512i v = _mm512_loadu_si512((const void *)p);
        if (dst) { _mm512_storeu_si512((void *)dst, v); dst += 64; }
        y = _mm512_xor_si512(fold512(y, k64), v);
        p += 64;
        n -= 64;
    }
    /* the four lanes of y are consecutive blocks: fold them into one */
    __m128i a = _mm512_extracti32x4_epi32(y, 3);
    a = _mm_xor_si128(a, fold128(_mm512_extracti32x4_epi32(y, 0), k128(48)));
    a = _mm_xor_si128(a, fold128(_mm512_extracti32x4_epi32(y, 1), k128(32)));
    a = _mm_xor_si128(a, fold128(_mm512_extracti32x4_epi32(y, 2), k128(16)));
    const __m128i k16 = k128(16);
    while (n >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        if (dst) { _mm_storeu_si128((__m128i *)dst, v); dst += 16; }
        a = _mm_xor_si128(fold128(a, k16), v);
        p += 16;
        n -= 16;
    }
    return fold_finish(a, dst, p, n);
}

TARGET_AVX512 static uint32_t crc_avx512(uint32_t c, const uint8_t *p, size_t n) {
    return crc_fold_avx512(c, NULL, p, n);
}

TARGET_AVX512 static uint32_t crc_avx512_copy(uint32_t c, uint8_t *dst, const uint8_t *p, size_t n) {
    return crc_fold_avx512(c, dst, p, n);
}
#endif /* CRC_FOLD */

/* 3 = AVX-512 + VPCLMULQDQ, 2 = SSE4.2, 1 = portable. (Folding 16-byte
 * vectors with plain PCLMULQDQ measured slower than the three crc32 streams
 * on the CPUs we have, so it is not a level of its own.) */
static int cpu_level(void) {
    static int level;
    int v = rl_atomic_load(&level, RL_ACQUIRE);
    if (!v) {
        crc_zeros(crc_long, CRC_LONG);     /* idempotent: racing threads write the same */
        crc_zeros(crc_short, CRC_SHORT);
        v = 1;
        if (rl_cpu_has_sse42()) v = 2;
#if defined(CRC_FOLD)
        fold_init();
        if (v == 2 && __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("avx512f") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq"))
            v = 3;
#endif
        rl_atomic_store(&level, v, RL_RELEASE);
    }
    return v;
}

static int level_now(void) {
    int v = cpu_level();
    int cap = 3 - rl_crc32c_force_level;   /* force 1 -> at most SSE4.2, ... */
    return v < cap ? v : cap;
}

static uint32_t crc_raw(uint32_t c, const uint8_t *p, size_t n) {
    int level = level_now();
#if defined(CRC_FOLD)
    if (level >= 3 && n >= 256) return crc_avx512(c, p, n);
#endif
    if (level >= 2) return crc_hw(c, p, n);
    return crc_sw(c, p, n);
}

static uint32_t crc_raw_copy(uint32_t c, uint8_t *dst, const uint8_t *p, size_t n) {
    int level = level_now();
#if defined(CRC_FOLD)
    if (level >= 3 && n >= 256) return crc_avx512_copy(c, dst, p, n);
#endif
    if (level >= 2) return copy_then_crc(c, dst, p, n, crc_hw);
    return copy_then_crc(c, dst, p, n, crc_sw);
}
#else
static uint32_t crc_raw(uint32_t c, const uint8_t *p, size_t n) { return crc_sw(c, p, n); }
static uint32_t crc_raw_copy(uint32_t c, uint8_t *dst, const uint8_t *p, size_t n) {
    return copy_then_crc(c, dst, p, n, crc_sw);
}
#endif

uint32_t rl_crc32c(uint32_t crc, const void *p, size_t n) {
    if (n == 0) return crc;
    return ~crc_raw(~crc, (const uint8_t *)p, n);
}

uint32_t rl_crc32c_copy(uint32_t crc, void *dst, const void *src, size_t n) {
    if (n == 0) return crc;
    return ~crc_raw_copy(~crc, (uint8_t *)dst, (const uint8_t *)src, n);
}
