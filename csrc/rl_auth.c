/* rl_auth.c -- SHA-256, HMAC-SHA256, constant-time compare, OS randomness.
 * See rl_auth.h. SHA-256 follows FIPS 180-4 section 6.2 directly. */
#define _GNU_SOURCE
#include "rl_auth.h"

#include <errno.h>
#include <string.h>
#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <bcrypt.h>   /* link bcrypt */
#else
#include <fcntl.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/random.h>
#endif
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static void compress(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

void rl_sha256_init(rl_sha256 *s) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->total = 0;
    s->have = 0;
}

void rl_sha256_update(rl_sha256 *s, const void *data, size_t n) {
    const uint8_t *p = data;
    if (n == 0) return;   /* data may be NULL then */
    s->total += n;
    if (s->have) {
        size_t take = RL_SHA256_BLOCK - s->have < n ? RL_SHA256_BLOCK - s->have : n;
        memcpy(s->buf + s->have, p, take);
        s->have += take;
        p += take;
        n -= take;
        if (s->have < RL_SHA256_BLOCK) return;
        compress(s->h, s->buf);
        s->have = 0;
    }
    for (; n >= RL_SHA256_BLOCK; p += RL_SHA256_BLOCK, n -= RL_SHA256_BLOCK) compress(s->h, p);
    memcpy(s->buf, p, n);
    s->have = n;
}

void rl_sha256_final(rl_sha256 *s, uint8_t out[RL_SHA256_SIZE]) {
    uint64_t bits = s->total * 8;
    uint8_t pad[RL_SHA256_BLOCK + 8];
    size_t padlen = (s->have < 56 ? 56 : 120) - s->have;  /* 0x80, zeros, up to 56 mod 64 */
    memset(pad, 0, sizeof pad);
    pad[0] = 0x80;
    for (int i = 0; i < 8; i++) pad[padlen + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    rl_sha256_update(s, pad, padlen + 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
    memset(s, 0, sizeof *s);
}

void rl_hmac_init(rl_hmac *m, const void *key, size_t key_len) {
    uint8_t k[RL_SHA256_BLOCK], pad[RL_SHA256_BLOCK];
    memset(k, 0, sizeof k);
    if (key_len > RL_SHA256_BLOCK) {
        rl_sha256 s;
        rl_sha256_init(&s);
        rl_sha256_update(&s, key, key_len);
        rl_sha256_final(&s, k);
    } else if (key_len) {
        memcpy(k, key, key_len);
    }
    for (size_t i = 0; i < sizeof pad; i++) pad[i] = k[i] ^ 0x36;
    rl_sha256_init(&m->inner);
    rl_sha256_update(&m->inner, pad, sizeof pad);
    for (size_t i = 0; i < sizeof pad; i++) pad[i] = k[i] ^ 0x5c;
    rl_sha256_init(&m->outer);
    rl_sha256_update(&m->outer, pad, sizeof pad);
    memset(k, 0, sizeof k);
    memset(pad, 0, sizeof pad);
}

void rl_hmac_update(rl_hmac *m, const void *p, size_t n) { rl_sha256_update(&m->inner, p, n); }

void rl_hmac_final(rl_hmac *m, uint8_t out[RL_SHA256_SIZE]) {
    uint8_t ih[RL_SHA256_SIZE];
    rl_sha256_final(&m->inner, ih);
    rl_sha256_update(&m->outer, ih, sizeof ih);
    rl_sha256_final(&m->outer, out);
    memset(ih, 0, sizeof ih);
}

int rl_ct_equal(const void *a, const void *b, size_t n) {
    const volatile uint8_t *x = a, *y = b;
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++) d |= (uint8_t)(x[i] ^ y[i]);
    return d == 0;
}

int rl_random_bytes(void *p, size_t n) {
    uint8_t *o = p;
#if defined(_WIN32)
    while (n) {   /* BCryptGenRandom takes a ULONG length */
        ULONG k = n > 0x40000000u ? 0x40000000u : (ULONG)n;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, o, k, BCRYPT_USE_SYSTEM_PREFERRED_RNG))) return -1;
        o += k;
        n -= k;
    }
    return 0;
#else
#ifdef __linux__
    while (n) {
        ssize_t r = getrandom(o, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            break;   /* ENOSYS on an old kernel: fall back to the device */
        }
        o += r;
        n -= (size_t)r;
    }
    if (!n) return 0;
#endif
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    while (n) {
        ssize_t r = read(fd, o, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { close(fd); return -1; }
        o += r;
        n -= (size_t)r;
    }
    close(fd);
    return 0;
#endif
}
