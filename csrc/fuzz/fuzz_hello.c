/*
 * fuzz_hello.c -- libFuzzer target for the handshake parser (rl_hello_decode).
 *
 * FUZZ_SOURCES: rl_frame.c rl_crc.c
 * FUZZ_FLAGS: -max_len=128
 *
 * (Read by .ci/fuzz.sh: the csrc/ files to link, extra libFuzzer flags.
 * Seeds: csrc/fuzz/corpus/hello/, made by csrc/fuzz/make_corpus.py. Crash
 * inputs: csrc/fuzz/regressions/hello/.)
 *
 * Two directions, each against a reference model written from PROTOCOL.md
 * 3.1-3.2 rather than from rl_frame.c:
 *
 *   wire -> struct  The first 32 input bytes, copied into a heap block of
 *                   exactly RL_HELLO_SIZE bytes (ASan catches a read past
 *                   it), go through rl_hello_decode. Its result must be the
 *                   reference's (magic, then version, then role/flags/node_id);
 *                   whatever decodes OK must re-encode to the same 32 bytes,
 *                   and a version mismatch must still report the peer's
 *                   version.
 *   struct -> wire  If the input is longer, its next 28 bytes fill an rl_hello
 *                   field by field; it is encoded, and decoding that must give
 *                   the reference's result and, when OK, the same fields.
 *
 * A mismatch calls __builtin_trap(), which libFuzzer reports as a crash.
 *
 * Adding a target for another fixed-size message (e.g. an authenticated
 * handshake, fuzz_auth.c): copy this file, list the csrc/ files it needs on
 * the FUZZ_SOURCES line (sans-IO files only: no sockets, no threads), write
 * the reference check from PROTOCOL.md, keep the exact-size heap copy and the
 * decode -> encode identity, add seeds under corpus/<name>/ from
 * make_corpus.py. .ci/fuzz.sh builds and runs every csrc/fuzz/fuzz_*.c it
 * finds; nothing else needs registering.
 */
#include "rl_frame.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* helpers (kept in this file so a new target is one copied file)             */
/* ------------------------------------------------------------------------ */
#define FZ_CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

/* A heap copy of exactly n bytes (a 1-byte block for n == 0, never read). */
static uint8_t *fz_dup(const uint8_t *p, size_t n) {
    uint8_t *q = malloc(n ? n : 1);
    if (!q) abort();
    if (n) memcpy(q, p, n);
    return q;
}

static uint64_t fz_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------------ */
/* reference: PROTOCOL.md 3.1 (layout) and 3.2 (order of the checks)          */
/* ------------------------------------------------------------------------ */
static int ref_hello_check(const uint8_t in[32]) {
    if (in[0] != 'R' || in[1] != 'L' || in[2] != 'N' || in[3] != 'K') return RL_EPROTO;
    if (fz_le(in + 4, 2) != 1) return RL_EVERSION;
    if (in[6] != 1 && in[6] != 2) return RL_EPROTO;
    if (in[7] & 0xFC) return RL_EPROTO;   /* bit 0 reliable, bit 1 AUTH (PROTOCOL.md 3.1) */
    if (fz_le(in + 8, 8) == 0) return RL_EPROTO;
    return RL_OK;
}

static void ref_hello_fields(const uint8_t in[32], rl_hello *h) {
    h->version = (uint16_t)fz_le(in + 4, 2);
    h->role = in[6];
    h->flags = in[7];
    h->node_id = fz_le(in + 8, 8);
    h->resume_seq = fz_le(in + 16, 8);
    h->max_message = (uint32_t)fz_le(in + 24, 4);
    h->retry_attempts = (uint32_t)fz_le(in + 28, 4);
}

static int same_fields(const rl_hello *a, const rl_hello *b) {
    return a->version == b->version && a->role == b->role && a->flags == b->flags &&
           a->node_id == b->node_id && a->resume_seq == b->resume_seq &&
           a->max_message == b->max_message && a->retry_attempts == b->retry_attempts;
}

/* ------------------------------------------------------------------------ */
/* wire -> struct                                                              */
/* ------------------------------------------------------------------------ */
static void fuzz_decode(const uint8_t *data) {
    uint8_t *in = fz_dup(data, RL_HELLO_SIZE);
    uint8_t out[RL_HELLO_SIZE];
    rl_hello h, want;
    memset(&h, 0, sizeof h);
    int rc = rl_hello_decode(in, &h);
    FZ_CHECK(rc == ref_hello_check(in));
    if (rc == RL_OK) {
        ref_hello_fields(in, &want);
        FZ_CHECK(same_fields(&h, &want));
        rl_hello_encode(&h, out);
        FZ_CHECK(memcmp(out, in, RL_HELLO_SIZE) == 0);
    } else if (rc == RL_EVERSION) {
        /* the caller names the peer's version in its error message */
        FZ_CHECK(h.version == fz_le(in + 4, 2) && h.version != RL_PROTOCOL_VERSION);
    }
    free(in);
}

/* ------------------------------------------------------------------------ */
/* struct -> wire                                                              */
/* ------------------------------------------------------------------------ */
static void fuzz_encode(const uint8_t *f /* 28 bytes */) {
    rl_hello h, back;
    uint8_t *out = malloc(RL_HELLO_SIZE);
    if (!out) abort();
    h.version = (uint16_t)fz_le(f, 2);
    h.role = f[2];
    h.flags = f[3];
    h.node_id = fz_le(f + 4, 8);
    h.resume_seq = fz_le(f + 12, 8);
    h.max_message = (uint32_t)fz_le(f + 20, 4);
    h.retry_attempts = (uint32_t)fz_le(f + 24, 4);
    rl_hello_encode(&h, out);
    FZ_CHECK(memcmp(out, RL_MAGIC, 4) == 0);
    memset(&back, 0, sizeof back);
    int rc = rl_hello_decode(out, &back);
    FZ_CHECK(rc == ref_hello_check(out));
    if (rc == RL_OK) FZ_CHECK(same_fields(&h, &back));
    if (rc == RL_EVERSION) FZ_CHECK(back.version == h.version);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < RL_HELLO_SIZE) return 0;
    fuzz_decode(data);
    if (size >= RL_HELLO_SIZE + 28) fuzz_encode(data + RL_HELLO_SIZE);
    return 0;
}
