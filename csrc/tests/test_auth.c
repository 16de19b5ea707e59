/* test_auth.c -- SHA-256 (FIPS 180-4 examples) and HMAC-SHA256 (RFC 4231). */
#include "rl_test.h"
#include "rl_auth.h"

#include <stdlib.h>
#include <string.h>

static void hex(const uint8_t *p, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

static void unhex(const char *s, uint8_t *out, size_t *n) {
    size_t len = strlen(s) / 2;
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    *n = len;
}

static int sha_is(const void *msg, size_t n, const char *want) {
    uint8_t d[RL_SHA256_SIZE];
    char got[2 * RL_SHA256_SIZE + 1];
    rl_sha256 s;
    rl_sha256_init(&s);
    rl_sha256_update(&s, msg, n);
    rl_sha256_final(&s, d);
    hex(d, sizeof d, got);
    if (strcmp(got, want) != 0) {
        printf("  sha256 got %s\n  want       %s\n", got, want);
        return 0;
    }
    return 1;
}

static void test_sha256_vectors(void) {
    CHECK(sha_is("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    CHECK(sha_is("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK(sha_is(m448, strlen(m448),
                 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                       "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    CHECK(sha_is(m896, strlen(m896),
                 "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"));
    char *ma = malloc(1000000);
    if (!CHECK(ma != NULL)) return;
    memset(ma, 'a', 1000000);
    CHECK(sha_is(ma, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
    free(ma);
}

/* Absorbing in pieces of every size gives the same digest as one call. */
static void test_sha256_streaming(void) {
    uint8_t msg[300], one[RL_SHA256_SIZE], parts[RL_SHA256_SIZE];
    for (size_t i = 0; i < sizeof msg; i++) msg[i] = (uint8_t)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof msg; len += 13) {
        rl_sha256 s;
        rl_sha256_init(&s);
        rl_sha256_update(&s, msg, len);
        rl_sha256_final(&s, one);
        for (size_t step = 1; step <= 70; step += 23) {
            rl_sha256_init(&s);
            for (size_t off = 0; off < len; off += step)
                rl_sha256_update(&s, msg + off, len - off < step ? len - off : step);
            rl_sha256_final(&s, parts);
            CHECK(memcmp(one, parts, sizeof one) == 0);
        }
    }
}

static void test_hmac_rfc4231(void) {
    static const struct { const char *key, *data, *mac; } v[] = {
        {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {"4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
         "dddddddddddddddddddd",
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {"0102030405060708090a0b0c0d0e0f10111213141516171819",
         "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
         "cdcdcdcdcdcdcdcdcdcd",
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaa",   /* 131 bytes */
         "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048"
         "617368204b6579204669727374",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    };
    for (size_t i = 0; i < RL_COUNTOF(v); i++) {
        uint8_t key[256], data[256], mac[RL_SHA256_SIZE];
        size_t kn, dn;
        char got[2 * RL_SHA256_SIZE + 1];
        unhex(v[i].key, key, &kn);
        unhex(v[i].data, data, &dn);
        rl_hmac m;
        rl_hmac_init(&m, key, kn);
        rl_hmac_update(&m, data, dn);
        rl_hmac_final(&m, mac);
        hex(mac, sizeof mac, got);
        if (!CHECK(strcmp(got, v[i].mac) == 0)) printf("  case %zu: got %s\n", i + 1, got);
    }
}

static void test_ct_equal_and_random(void) {
    uint8_t a[32], b[32];
    CHECK_EQ(rl_random_bytes(a, sizeof a), 0);
    memcpy(b, a, sizeof a);
    CHECK(rl_ct_equal(a, b, sizeof a));
    for (size_t i = 0; i < sizeof a; i++) {
        b[i] ^= 1;
        CHECK(!rl_ct_equal(a, b, sizeof a));
        b[i] ^= 1;
    }
    CHECK(rl_ct_equal(a, b, 0));
    uint8_t c[32];
    CHECK_EQ(rl_random_bytes(c, sizeof c), 0);
    CHECK(!rl_ct_equal(a, c, sizeof a));   /* 2^-256 */
}

static const rl_test auth_tests[] = {
    RL_TEST(test_sha256_vectors),
    RL_TEST(test_sha256_streaming),
    RL_TEST(test_hmac_rfc4231),
    RL_TEST(test_ct_equal_and_random),
};
void run_auth_tests(void) { RL_RUN_SUITE(auth_tests); }
