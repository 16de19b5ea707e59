/* test_crc.c -- CRC32C: check values, and every implementation level
 * (AVX-512 folding, SSE4.2, portable) against a bitwise
 * reference at every length around each path's thresholds, from every
 * alignment, one-shot and continued, plain and fused with a copy. Levels the
 * CPU lacks fall back to the next one down, so on any machine each check
 * compares what that machine runs. */
#include "rl_test.h"
#include "rl_crc.h"

#include <stdlib.h>
#include <string.h>

/* bit at a time, straight from the definition */
static uint32_t ref_crc32c(uint32_t crc, const uint8_t *p, size_t n) {
    uint32_t c = ~crc;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return ~c;
}

static void test_crc32c_check_values(void) {
    /* the standard check value of CRC-32C (Castagnoli), and RFC 3720 B.4 */
    static const uint8_t zeros[32], ones[32] = {
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255};
    for (int level = 0; level <= 2; level++) {
        rl_crc32c_force_level = level;
        CHECK_EQU(rl_crc32c(0, "123456789", 9), 0xE3069283u);
        CHECK_EQU(rl_crc32c(0, "", 0), 0);
        CHECK_EQU(rl_crc32c(0, zeros, 32), 0x8A9136AAu);
        CHECK_EQU(rl_crc32c(0, ones, 32), 0x62A8AB43u);
    }
    rl_crc32c_force_level = 0;
}

static void test_crc32c_levels_agree(void) {
    size_t max = 3 * 8192 * 2 + 4096;   /* past the three-stream long blocks */
    uint8_t *buf = malloc(max + 64), *dst = malloc(max + 64);
    if (!CHECK(buf && dst)) { free(buf); free(dst); return; }
    uint64_t s = 0x9E3779B97F4A7C15u;
    for (size_t i = 0; i < max + 64; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        buf[i] = (uint8_t)s;
    }
    /* every length up to 1100 (all thresholds: 8, 16, 64, 256, 768, and the
     * folding loops' remainders), then a spread of long ones */
    size_t lens[1100 + 12];
    size_t nlens = 0;
    for (size_t n = 0; n < 1100; n++) lens[nlens++] = n;
    static const size_t longs[] = {4095, 4096, 4097, 24575, 24576, 24577,
                                   3 * 8192 * 2, 3 * 8192 * 2 + 3 * 256 + 5, 40000, 45000, 50000, 53248};
    for (size_t i = 0; i < RL_COUNTOF(longs); i++) lens[nlens++] = longs[i];
    unsigned long bad = 0;
    for (size_t li = 0; li < nlens; li++) {
        size_t n = lens[li];
        for (size_t off = 0; off < 64; off += (n < 1100 ? 29 : 7)) {
            uint32_t seed = (uint32_t)(n * 2654435761u);
            uint32_t want = ref_crc32c(seed, buf + off, n);
            for (int level = 0; level <= 2; level++) {
                rl_crc32c_force_level = level;
                if (rl_crc32c(seed, buf + off, n) != want) bad++;
                memset(dst, 0xA5, n + 64);
                size_t doff = (off * 5) % 64;
                if (rl_crc32c_copy(seed, dst + doff, buf + off, n) != want) bad++;
                if (memcmp(dst + doff, buf + off, n) != 0) bad++;
                if (doff && dst[doff - 1] != 0xA5) bad++;                 /* nothing written around */
                if (dst[doff + n] != 0xA5) bad++;
            }
        }
    }
    rl_crc32c_force_level = 0;
    CHECK_EQU(bad, 0);
    free(buf);
    free(dst);
}

static void test_crc32c_continued(void) {
    uint8_t buf[3000];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 31 + 7);
    uint32_t whole = rl_crc32c(0, buf, sizeof buf);
    CHECK_EQU(whole, ref_crc32c(0, buf, sizeof buf));
    for (size_t cut = 0; cut <= sizeof buf; cut += 13)
        CHECK_EQU(rl_crc32c(rl_crc32c(0, buf, cut), buf + cut, sizeof buf - cut), whole);
    /* every single-bit flip changes it */
    for (size_t i = 0; i < sizeof buf; i += 7) {
        buf[i] ^= 0x10;
        CHECK(rl_crc32c(0, buf, sizeof buf) != whole);
        buf[i] ^= 0x10;
    }
}

static const rl_test crc_tests[] = {
    RL_TEST(test_crc32c_check_values),
    RL_TEST(test_crc32c_levels_agree),
    RL_TEST(test_crc32c_continued),
};
void run_crc_tests(void) { RL_RUN_SUITE(crc_tests); }
