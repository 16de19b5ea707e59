/*
 * rl_auth.h -- what the handshake's shared-secret authentication needs:
 * SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104), a constant-time comparison
 * and random bytes from the operating system. Sans-IO except rl_random_bytes.
 *
 * Every function is reentrant and thread-safe: state lives only in the
 * caller's rl_sha256 / rl_hmac objects. Nothing here allocates.
 *
 * The implementation is checked against the FIPS 180-4 and RFC 4231 test
 * vectors (csrc/tests/test_auth.c) and against Python's hashlib/hmac on
 * random keys and messages of every length around the block boundaries
 * (tests/test_auth.py).
 */
#ifndef RL_AUTH_H
#define RL_AUTH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RL_SHA256_SIZE 32u
#define RL_SHA256_BLOCK 64u

typedef struct rl_sha256 {
    uint32_t h[8];
    uint64_t total;              /* bytes absorbed */
    uint8_t buf[RL_SHA256_BLOCK];
    size_t have;                 /* bytes in buf */
} rl_sha256;

void rl_sha256_init(rl_sha256 *s);
void rl_sha256_update(rl_sha256 *s, const void *p, size_t n);
void rl_sha256_final(rl_sha256 *s, uint8_t out[RL_SHA256_SIZE]);

typedef struct rl_hmac {
    rl_sha256 inner, outer;
} rl_hmac;

/* Keys of any length (longer than 64 bytes are hashed first, per RFC 2104). */
void rl_hmac_init(rl_hmac *m, const void *key, size_t key_len);
void rl_hmac_update(rl_hmac *m, const void *p, size_t n);
void rl_hmac_final(rl_hmac *m, uint8_t out[RL_SHA256_SIZE]);

/* 1 when the n bytes at a and b are equal. Its running time depends only on
 * n, never on where the bytes differ. */
int rl_ct_equal(const void *a, const void *b, size_t n);

/* Fill p with n bytes from the OS's cryptographic generator (getrandom or
 * /dev/urandom; BCryptGenRandom on Windows). Returns 0, or -1 if none is
 * available (then p is unusable as a nonce and the caller must refuse to
 * authenticate). */
int rl_random_bytes(void *p, size_t n);

#ifdef __cplusplus
}
#endif
#endif
