/*
 * test_frame.c -- tests for the wire codec (rl_frame.c).
 *
 * Inputs handed to the decoders are copied into heap buffers of exactly
 * their length first, so that AddressSanitizer reports any read past the end.
 */
#include "rl_test.h"

#include "rl_frame.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* helpers                                                                    */
/* ------------------------------------------------------------------------ */

/* A growable byte buffer for hand-built (possibly malformed) metas. */
typedef struct bb {
    uint8_t *p;
    size_t len, cap;
} bb;

static void bb_put(bb *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void bb_u8(bb *b, unsigned v) { uint8_t x = (uint8_t)v; bb_put(b, &x, 1); }
static void bb_u32(bb *b, uint32_t v) {
    uint8_t x[4];
    for (int i = 0; i < 4; i++) x[i] = (uint8_t)(v >> (8 * i));
    bb_put(b, x, 4);
}
static void bb_u64(bb *b, uint64_t v) {
    uint8_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
    bb_put(b, x, 8);
}
static void bb_tagu32(bb *b, unsigned tag, uint32_t v) { bb_u8(b, tag); bb_u32(b, v); }
static void bb_blob(bb *b, unsigned tag, const void *s, uint32_t n) {
    bb_tagu32(b, tag, n);
    bb_put(b, s, n);
}
static void bb_key(bb *b, const char *s) {
    bb_u32(b, (uint32_t)strlen(s));
    bb_put(b, s, strlen(s));
}
/* ARRAY descriptor */
static void bb_array(bb *b, unsigned dtype, unsigned ndim, const uint64_t *shape,
                     unsigned aflags, uint64_t offset) {
    bb_u8(b, RL_T_ARRAY);
    bb_u8(b, dtype);
    bb_u8(b, ndim);
    bb_u8(b, aflags);
    for (unsigned i = 0; i < ndim; i++) bb_u64(b, shape[i]);
    bb_u64(b, offset);
}
static void bb_free(bb *b) { free(b->p); memset(b, 0, sizeof *b); }

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Copy n bytes into a fresh heap block of exactly n bytes (1 if n == 0). */
static uint8_t *dup_exact(const uint8_t *p, size_t n) {
    uint8_t *q = malloc(n ? n : 1);
    if (!q) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    if (n) memcpy(q, p, n);
    else q[0] = 0;
    return q;
}

/* rl_meta_validate on an exact-size copy. */
static int validate_lim(const uint8_t *meta, size_t len, uint64_t data_len,
                        const rl_limits *lim) {
    uint8_t *m = dup_exact(meta, len);
    const char *why = NULL;
    unsigned root = 0xFFFF;
    int rc = rl_meta_validate(m, len, data_len, lim, &root, &why);
    if (rc != RL_OK) {
        /* a failure always comes with a reason */
        CHECK(why != NULL && why[0] != '\0');
        CHECK(rc == RL_EPROTO || rc == RL_ELIMIT);
    }
    free(m);
    return rc;
}

static int validate(const uint8_t *meta, size_t len, uint64_t data_len) {
    rl_limits lim;
    rl_limits_default(&lim);
    return validate_lim(meta, len, data_len, &lim);
}

static int validate_bb(const bb *b, uint64_t data_len) {
    return validate(b->p, b->len, data_len);
}

/*
 * Walk an already validated meta with the reader, touching every byte that a
 * real consumer would touch (strings, scalars, and each array's bytes in a
 * data buffer of exactly data_len bytes). Returns RL_OK if the walk succeeded
 * and consumed the meta exactly.
 */
static volatile unsigned walk_sink;
static int walk_touch(const uint8_t *meta, size_t len, const uint8_t *data,
                      uint64_t data_len, const rl_limits *lim) {
    rl_reader r;
    rl_item it;
    uint32_t remaining[RL_MAX_DEPTH + 2];
    unsigned char is_dict[RL_MAX_DEPTH + 2];
    unsigned depth = 0;
    unsigned sum = 0;
    rl_reader_init(&r, meta, len, data_len, lim);
    remaining[0] = 1;
    is_dict[0] = 0;
    for (;;) {
        while (depth > 0 && remaining[depth] == 0) depth--;
        if (remaining[depth] == 0) break;
        remaining[depth]--;
        if (is_dict[depth]) {
            const uint8_t *k;
            uint32_t kn;
            int rc = rl_read_key(&r, &k, &kn);
            if (rc) return rc;
            for (uint32_t i = 0; i < kn; i++) sum += k[i];
        }
        int rc = rl_read_item(&r, &it);
        if (rc) return rc;
        switch (it.tag) {
        case RL_T_STR: case RL_T_BYTES: case RL_T_BIGINT:
            for (uint32_t i = 0; i < it.u.s.n; i++) sum += it.u.s.p[i];
            break;
        case RL_T_SCALAR:
            for (size_t i = 0; i < rl_dtype_size(it.u.scalar.dtype); i++)
                sum += it.u.scalar.p[i];
            break;
        case RL_T_ARRAY:
            if (it.u.array.offset + it.u.array.nbytes > data_len) return -100;
            for (uint64_t i = 0; i < it.u.array.nbytes; i++)
                sum += data[it.u.array.offset + i];
            break;
        case RL_T_LIST: case RL_T_TUPLE: case RL_T_DICT:
            if (depth + 1 > RL_MAX_DEPTH) return -101;
            depth++;
            remaining[depth] = it.u.count;
            is_dict[depth] = it.tag == RL_T_DICT;
            break;
        default:
            break;
        }
    }
    walk_sink = sum;
    return r.p == r.end ? RL_OK : -102;
}

/* Validate, and if accepted, walk; checks the two agree. */
static int validate_and_walk(const uint8_t *meta, size_t len, uint64_t data_len,
                             const rl_limits *lim) {
    uint8_t *m = dup_exact(meta, len);
    int rc = rl_meta_validate(m, len, data_len, lim, NULL, NULL);
    if (rc == RL_OK) {
        uint8_t *data = malloc(data_len ? (size_t)data_len : 1);
        if (!data) exit(2);
        memset(data, 0xA5, data_len ? (size_t)data_len : 1);
        CHECK_EQ(walk_touch(m, len, data, data_len, lim), RL_OK);
        free(data);
    } else {
        CHECK(rc == RL_EPROTO || rc == RL_ELIMIT);
    }
    free(m);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* misc                                                                       */
/* ------------------------------------------------------------------------ */

static void test_strerror_and_dtypes(void) {
    for (int c = 1; c >= -20; c--) {
        const char *s = rl_strerror(c);
        CHECK(s != NULL && s[0] != '\0');
    }
    CHECK(strcmp(rl_strerror(RL_EPROTO), rl_strerror(RL_ELIMIT)) != 0);
    static const size_t want[] = {0, 1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8, 8, 16};
    for (unsigned d = 0; d <= RL_DT_MAX; d++) CHECK_EQU(rl_dtype_size(d), want[d]);
    CHECK_EQU(rl_dtype_size(RL_DT_MAX + 1), 0);
    CHECK_EQU(rl_dtype_size(255), 0);
    CHECK_EQU(rl_dtype_size(0xFFFFFFFFu), 0);
    CHECK_EQ(RL_DT_BOOL, 1);
    CHECK_EQ(RL_DT_FLOAT16, 10);
    CHECK_EQ(RL_DT_COMPLEX128, 14);
}

static void test_limits_default(void) {
    rl_limits l;
    rl_limits_default(&l);
    CHECK_EQU(l.max_message_bytes, (uint64_t)1 << 30);
    CHECK_EQU(l.max_arrays, 1u << 16);
    CHECK_EQU(l.max_ndim, RL_MAX_NDIM);
    CHECK_EQU(l.max_depth, 64);
    CHECK_EQU(l.max_items, 1u << 20);
    CHECK_EQU(l.max_str_bytes, 1u << 26);
}

/* ------------------------------------------------------------------------ */
/* hello                                                                      */
/* ------------------------------------------------------------------------ */

static void sample_hello(rl_hello *h) {
    memset(h, 0, sizeof *h);
    h->version = RL_PROTOCOL_VERSION;
    h->role = RL_ROLE_ACTOR;
    h->flags = RL_HELLO_RELIABLE;
    h->node_id = 0x1122334455667788ull;
    h->resume_seq = 42;
    h->max_message = 1024;
    h->retry_attempts = 3;
}

static int hello_decode_exact(const uint8_t *b, rl_hello *h) {
    uint8_t *c = dup_exact(b, RL_HELLO_SIZE);
    int rc = rl_hello_decode(c, h);
    free(c);
    return rc;
}

static void test_hello_roundtrip(void) {
    rl_hello h, d;
    uint8_t b[RL_HELLO_SIZE];
    sample_hello(&h);
    memset(b, 0xEE, sizeof b);
    rl_hello_encode(&h, b);
    /* exact layout */
    CHECK(memcmp(b, "RLNK", 4) == 0);
    CHECK_EQ(b[4], 1);
    CHECK_EQ(b[5], 0);
    CHECK_EQ(b[6], RL_ROLE_ACTOR);
    CHECK_EQ(b[7], RL_HELLO_RELIABLE);
    CHECK_EQU(le64(b + 8), 0x1122334455667788ull);
    CHECK_EQ(b[8], 0x88);
    CHECK_EQU(le64(b + 16), 42);
    CHECK_EQU(le32(b + 24), 1024);
    CHECK_EQU(le32(b + 28), 3);

    memset(&d, 0, sizeof d);
    CHECK_EQ(hello_decode_exact(b, &d), RL_OK);
    CHECK_EQ(d.version, h.version);
    CHECK_EQ(d.role, h.role);
    CHECK_EQ(d.flags, h.flags);
    CHECK_EQU(d.node_id, h.node_id);
    CHECK_EQU(d.resume_seq, h.resume_seq);
    CHECK_EQU(d.max_message, h.max_message);
    CHECK_EQU(d.retry_attempts, h.retry_attempts);

    /* learner, no flags, extreme values */
    h.role = RL_ROLE_LEARNER;
    h.flags = 0;
    h.node_id = UINT64_MAX;
    h.resume_seq = UINT64_MAX;
    h.max_message = UINT32_MAX;
    h.retry_attempts = 0;
    rl_hello_encode(&h, b);
    CHECK_EQ(hello_decode_exact(b, &d), RL_OK);
    CHECK_EQ(d.role, RL_ROLE_LEARNER);
    CHECK_EQ(d.flags, 0);
    CHECK_EQU(d.node_id, UINT64_MAX);
    CHECK_EQU(d.resume_seq, UINT64_MAX);
    CHECK_EQU(d.max_message, UINT32_MAX);
    CHECK_EQU(d.retry_attempts, 0);
}

static void test_hello_bad_magic(void) {
    rl_hello h, d;
    uint8_t b[RL_HELLO_SIZE];
    sample_hello(&h);
    for (int i = 0; i < 4; i++) {
        rl_hello_encode(&h, b);
        b[i] ^= 0x20;   /* "rLNK", "RlNK", ... */
        CHECK_EQ(hello_decode_exact(b, &d), RL_EPROTO);
        b[i] = 0;
        CHECK_EQ(hello_decode_exact(b, &d), RL_EPROTO);
    }
    /* an HTTP request or TLS hello is not a peer */
    memset(b, 0, sizeof b);
    memcpy(b, "GET / HTTP/1.1\r\n", 16);
    CHECK_EQ(hello_decode_exact(b, &d), RL_EPROTO);
}

static void test_hello_version(void) {
    rl_hello h, d;
    uint8_t b[RL_HELLO_SIZE];
    static const uint16_t versions[] = {0, 2, 3, 0x100, 0xFFFF};
    for (size_t i = 0; i < RL_COUNTOF(versions); i++) {
        sample_hello(&h);
        h.version = versions[i];
        rl_hello_encode(&h, b);
        memset(&d, 0, sizeof d);
        CHECK_EQ(hello_decode_exact(b, &d), RL_EVERSION);
        CHECK_EQ(d.version, versions[i]);
        /* the other fields are still filled in, for the caller's message */
        CHECK_EQU(d.node_id, h.node_id);
        CHECK_EQ(d.role, h.role);
    }
    /* version is checked before role/flags/node_id: a future peer's hello may
     * use them differently, and must still be reported as a version mismatch */
    sample_hello(&h);
    h.version = 2;
    h.role = 0;
    h.flags = 0xFF;
    h.node_id = 0;
    rl_hello_encode(&h, b);
    CHECK_EQ(hello_decode_exact(b, &d), RL_EVERSION);
    CHECK_EQ(d.version, 2);
    /* but bad magic wins over version */
    b[0] = 'X';
    CHECK_EQ(hello_decode_exact(b, &d), RL_EPROTO);
}

static void test_hello_fields(void) {
    rl_hello h, d;
    uint8_t b[RL_HELLO_SIZE];

    sample_hello(&h);
    h.node_id = 0;
    rl_hello_encode(&h, b);
    CHECK_EQ(hello_decode_exact(b, &d), RL_EPROTO);

    static const uint8_t bad_roles[] = {0, 3, 4, 0x80, 0xFF};
    for (size_t i = 0; i < RL_COUNTOF(bad_roles); i++) {
        sample_hello(&h);
        h.role = bad_roles[i];
        rl_hello_encode(&h, b);
        CHECK_EQ(hello_decode_exact(b, &d), RL_EPROTO);
    }
    for (unsigned f = 0; f < 256; f++) {
        sample_hello(&h);
        h.flags = (uint8_t)f;
        rl_hello_encode(&h, b);
        CHECK_EQ(hello_decode_exact(b, &d),
                 (f & ~(RL_HELLO_RELIABLE | RL_HELLO_AUTH)) == 0 ? RL_OK : RL_EPROTO);
    }
}

static void test_hello_mutations(void) {
    rl_hello h, d;
    uint8_t b[RL_HELLO_SIZE];
    sample_hello(&h);
    for (size_t pos = 0; pos < RL_HELLO_SIZE; pos++) {
        for (unsigned v = 0; v < 256; v++) {
            rl_hello_encode(&h, b);
            b[pos] = (uint8_t)v;
            int rc = hello_decode_exact(b, &d);
            if (!CHECK(rc == RL_OK || rc == RL_EPROTO || rc == RL_EVERSION)) return;
            if (rc == RL_OK) {
                /* anything accepted re-encodes to the same bytes */
                uint8_t e[RL_HELLO_SIZE];
                rl_hello_encode(&d, e);
                if (!CHECK(memcmp(e, b, RL_HELLO_SIZE) == 0)) return;
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* header                                                                     */
/* ------------------------------------------------------------------------ */

static int header_decode_exact(const uint8_t *b, uint64_t max, rl_header *h) {
    uint8_t *c = dup_exact(b, RL_HEADER_SIZE);
    int rc = rl_header_decode(c, max, h);
    free(c);
    return rc;
}

static void test_header_roundtrip(void) {
    rl_header h, d;
    uint8_t b[RL_HEADER_SIZE];
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_PARAMS;
    h.flags = RL_FLAG_REDELIVERED;
    h.meta_len = 100;
    h.data_len = 1000;
    h.seq = 0x0102030405060708ull;
    h.ack = 9;
    h.ref = 0xA1A2A3A4A5A6A7A8ull;
    memset(b, 0xEE, sizeof b);
    rl_header_encode(&h, b);
    CHECK_EQ(b[0], RL_KIND_PARAMS);
    CHECK_EQ(b[1], RL_FLAG_REDELIVERED);
    CHECK_EQ(b[2], 0);
    CHECK_EQ(b[3], 0);
    CHECK_EQU(le32(b + 4), 100);
    CHECK_EQU(le64(b + 8), 1000);
    CHECK_EQU(le64(b + 16), 0x0102030405060708ull);
    CHECK_EQ(b[16], 0x08);
    CHECK_EQU(le64(b + 24), 9);
    CHECK_EQU(le64(b + 32), 0xA1A2A3A4A5A6A7A8ull);
    CHECK_EQU(le64(b + 40), 0);

    memset(&d, 0, sizeof d);
    CHECK_EQ(header_decode_exact(b, (uint64_t)1 << 30, &d), RL_OK);
    CHECK_EQ(d.kind, h.kind);
    CHECK_EQ(d.flags, h.flags);
    CHECK_EQU(d.meta_len, h.meta_len);
    CHECK_EQU(d.data_len, h.data_len);
    CHECK_EQU(d.seq, h.seq);
    CHECK_EQU(d.ack, h.ack);
    CHECK_EQU(d.ref, h.ref);
    CHECK_EQU(rl_frame_size(&d), 48 + 100 + 44 + 1000);

    /* every kind, with and without the redelivered flag, empty body */
    for (unsigned k = 1; k <= RL_KIND_MAX; k++) {
        for (unsigned f = 0; f <= RL_FLAG_REDELIVERED; f++) {
            memset(&h, 0, sizeof h);
            h.kind = (uint8_t)k;
            h.flags = (uint8_t)f;
            h.ref = k;
            rl_header_encode(&h, b);
            CHECK_EQ(header_decode_exact(b, 1 << 20, &d), RL_OK);
            CHECK_EQ(d.kind, k);
            CHECK_EQ(d.flags, f);
            CHECK_EQU(d.ref, k);
            CHECK_EQU(rl_frame_size(&d), RL_HEADER_SIZE);
        }
    }
    CHECK_EQ(RL_KIND_TRAJ, 1);
    CHECK_EQ(RL_KIND_PARAMS, 2);
    CHECK_EQ(RL_KIND_REQUEST, 3);
    CHECK_EQ(RL_KIND_REPLY, 4);
    CHECK_EQ(RL_KIND_PUSH, 5);
    CHECK_EQ(RL_KIND_ACK, 6);
    CHECK_EQ(RL_KIND_HEARTBEAT, 7);
    CHECK_EQ(RL_KIND_BYE, 8);
}

static void test_header_rejects(void) {
    rl_header h, d;
    uint8_t b[RL_HEADER_SIZE];
    const uint64_t max = (uint64_t)1 << 20;

    /* unknown kinds */
    static const uint8_t bad_kinds[] = {0, 9, 10, 0x7F, 0x80, 0xFF};
    for (size_t i = 0; i < RL_COUNTOF(bad_kinds); i++) {
        memset(&h, 0, sizeof h);
        h.kind = bad_kinds[i];
        rl_header_encode(&h, b);
        CHECK_EQ(header_decode_exact(b, max, &d), RL_EPROTO);
    }
    /* unknown flags (bit 0 redelivered and bit 1 checksum are defined) */
    for (unsigned f = 4; f < 256; f++) {
        memset(&h, 0, sizeof h);
        h.kind = RL_KIND_TRAJ;
        h.flags = (uint8_t)f;
        h.meta_len = 5;
        rl_header_encode(&h, b);
        CHECK_EQ(header_decode_exact(b, max, &d), RL_EPROTO);
    }
    /* each reserved byte non-zero */
    static const int reserved[] = {2, 3, 40, 41, 42, 43, 44, 45, 46, 47};
    for (size_t i = 0; i < RL_COUNTOF(reserved); i++) {
        static const uint8_t vals[] = {1, 0x80, 0xFF};
        for (size_t j = 0; j < RL_COUNTOF(vals); j++) {
            memset(&h, 0, sizeof h);
            h.kind = RL_KIND_TRAJ;
            h.meta_len = 5;
            rl_header_encode(&h, b);
            CHECK_EQ(header_decode_exact(b, max, &d), RL_OK);
            b[reserved[i]] = vals[j];
            CHECK_EQ(header_decode_exact(b, max, &d), RL_EPROTO);
        }
    }

    /* sizes against the limit */
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_TRAJ;
    h.meta_len = 16;                  /* 48 + 16 = 64: no padding */
    h.data_len = max - 64;            /* frame exactly max bytes */
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, max, &d), RL_OK);
    CHECK_EQU(rl_frame_size(&d), max);
    h.data_len = max - 63;            /* one byte over */
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, max, &d), RL_ELIMIT);
    h.data_len = max;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, max, &d), RL_ELIMIT);
    h.data_len = max + 1;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, max, &d), RL_ELIMIT);
    /* meta alone over the limit */
    h.data_len = 0;
    h.meta_len = (uint32_t)max;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, max, &d), RL_ELIMIT);
    h.meta_len = (uint32_t)max - RL_HEADER_SIZE;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, max, &d), RL_OK);
    h.meta_len = UINT32_MAX;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, max, &d), RL_ELIMIT);
    /* padding counts toward the limit: 48 + 17 + 63 + data */
    h.meta_len = 17;
    h.data_len = max - 128;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, max, &d), RL_OK);
    CHECK_EQU(rl_frame_size(&d), max);
    h.data_len = max - 127;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, max, &d), RL_ELIMIT);

    /* huge data_len values, under the default limit and under "no limit" */
    static const uint64_t huge[] = {
        (uint64_t)1 << 63, UINT64_MAX, UINT64_MAX - 15, UINT64_MAX - 63,
        UINT64_MAX - 64, UINT64_MAX - RL_HEADER_SIZE, UINT64_MAX - RL_HEADER_SIZE - 16,
        ((uint64_t)1 << 63) - 1};
    static const uint32_t metas[] = {0, 1, 16, 17, 1000, UINT32_MAX};
    static const uint64_t limits[] = {(uint64_t)1 << 30, (uint64_t)1 << 62,
                                      ((uint64_t)1 << 63) - 1, UINT64_MAX};
    for (size_t i = 0; i < RL_COUNTOF(huge); i++) {
        for (size_t j = 0; j < RL_COUNTOF(metas); j++) {
            for (size_t k = 0; k < RL_COUNTOF(limits); k++) {
                memset(&h, 0, sizeof h);
                h.kind = RL_KIND_TRAJ;
                h.meta_len = metas[j];
                h.data_len = huge[i];
                rl_header_encode(&h, b);
                int rc = header_decode_exact(b, limits[k], &d);
                if (limits[k] < UINT64_MAX) {
                    /* every one of these frames is larger than the limit */
                    CHECK_EQ(rc, RL_ELIMIT);
                } else if (rc == RL_OK) {
                    /* "no limit": accepted only if the frame size is exact,
                     * i.e. the sum header + meta + pad + data did not wrap */
                    uint64_t exact_hi = h.data_len > UINT64_MAX - rl_frame_data_offset(&h);
                    CHECK(!exact_hi);
                    CHECK(rl_frame_size(&d) >= d.data_len);
                    CHECK_EQU(rl_frame_size(&d) - d.data_len, rl_frame_data_offset(&d));
                } else {
                    CHECK_EQ(rc, RL_ELIMIT);
                }
            }
        }
    }
    /* the two values named in PROTOCOL.md, under the default limit */
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_TRAJ;
    h.data_len = (uint64_t)1 << 63;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, (uint64_t)1 << 30, &d), RL_ELIMIT);
    h.data_len = UINT64_MAX;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, (uint64_t)1 << 30, &d), RL_ELIMIT);
    /* 2^64 - 1 must not wrap to a small frame size even with no limit */
    CHECK_EQ(header_decode_exact(b, UINT64_MAX, &d), RL_ELIMIT);
    h.meta_len = 17;
    h.data_len = UINT64_MAX - 127;    /* 48 + 17 + 63 + data == 2^64 exactly */
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, UINT64_MAX, &d), RL_ELIMIT);
    /* the exact bound from PROTOCOL.md: data_len <= 2^64 - 2^32 - 112 */
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_TRAJ;
    h.meta_len = UINT32_MAX;
    h.data_len = UINT64_MAX - ((uint64_t)1 << 32) - 111;   /* 2^64 - 2^32 - 112 */
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, UINT64_MAX, &d), RL_OK);
    CHECK_EQU(rl_frame_size(&d), UINT64_MAX - 47);          /* 2^64 - 48, no wrap */
    h.data_len++;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, UINT64_MAX, &d), RL_ELIMIT);
    h.meta_len = 0;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, UINT64_MAX, &d), RL_ELIMIT);
    /* a large but representable frame under a huge limit is fine, and its
     * size does not wrap */
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_TRAJ;
    h.meta_len = UINT32_MAX;
    h.data_len = (uint64_t)1 << 40;
    rl_header_encode(&h, b);
    CHECK_EQ(header_decode_exact(b, UINT64_MAX, &d), RL_OK);
    CHECK(rl_frame_size(&d) > d.data_len);
    CHECK_EQU(rl_frame_size(&d) % RL_ALIGN, 0);
}

static void test_header_empty_kinds(void) {
    rl_header h, d;
    uint8_t b[RL_HEADER_SIZE];
    static const uint8_t kinds[] = {RL_KIND_BYE, RL_KIND_ACK, RL_KIND_HEARTBEAT};
    for (size_t i = 0; i < RL_COUNTOF(kinds); i++) {
        memset(&h, 0, sizeof h);
        h.kind = kinds[i];
        rl_header_encode(&h, b);
        CHECK_EQ(header_decode_exact(b, 1 << 20, &d), RL_OK);
        h.meta_len = 1;
        rl_header_encode(&h, b);
        CHECK_EQ(header_decode_exact(b, 1 << 20, &d), RL_EPROTO);
        h.meta_len = 0;
        h.data_len = 1;
        rl_header_encode(&h, b);
        CHECK_EQ(header_decode_exact(b, 1 << 20, &d), RL_EPROTO);
        h.meta_len = 9;
        h.data_len = 64;
        rl_header_encode(&h, b);
        CHECK_EQ(header_decode_exact(b, 1 << 20, &d), RL_EPROTO);
    }
    /* the other kinds may carry a body */
    for (unsigned k = 1; k <= 5; k++) {
        memset(&h, 0, sizeof h);
        h.kind = (uint8_t)k;
        h.meta_len = 9;
        h.data_len = 64;
        rl_header_encode(&h, b);
        CHECK_EQ(header_decode_exact(b, 1 << 20, &d), RL_OK);
    }
}

static void test_header_mutations(void) {
    rl_header h, d;
    uint8_t b[RL_HEADER_SIZE];
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_REPLY;
    h.meta_len = 300;
    h.data_len = 5000;
    h.ref = 77;
    for (size_t pos = 0; pos < RL_HEADER_SIZE; pos++) {
        for (unsigned v = 0; v < 256; v++) {
            static const uint64_t maxes[] = {(uint64_t)1 << 20, UINT64_MAX};
            for (size_t m = 0; m < 2; m++) {
                rl_header_encode(&h, b);
                b[pos] = (uint8_t)v;
                int rc = header_decode_exact(b, maxes[m], &d);
                if (!CHECK(rc == RL_OK || rc == RL_EPROTO || rc == RL_ELIMIT)) return;
                if (rc == RL_OK) {
                    uint64_t sz = rl_frame_size(&d);
                    if (!CHECK(sz <= maxes[m] && sz >= RL_HEADER_SIZE + (uint64_t)d.meta_len &&
                               sz >= d.data_len))
                        return;
                    uint8_t e[RL_HEADER_SIZE];
                    rl_header_encode(&d, e);
                    if (!CHECK(memcmp(e, b, RL_HEADER_SIZE) == 0)) return;
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* frame layout                                                               */
/* ------------------------------------------------------------------------ */

static void test_frame_pad(void) {
    rl_header h;
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_TRAJ;

    /* fixed points */
    h.meta_len = 0; h.data_len = 0;
    CHECK_EQU(rl_frame_pad(&h), 0);
    CHECK_EQU(rl_frame_size(&h), 48);
    h.meta_len = 0; h.data_len = 1;
    CHECK_EQU(rl_frame_pad(&h), 16);
    CHECK_EQU(rl_frame_data_offset(&h), 64);
    CHECK_EQU(rl_frame_size(&h), 65);
    h.meta_len = 16; h.data_len = 1;
    CHECK_EQU(rl_frame_pad(&h), 0);
    CHECK_EQU(rl_frame_data_offset(&h), 64);
    h.meta_len = 17; h.data_len = 1;
    CHECK_EQU(rl_frame_pad(&h), 63);
    CHECK_EQU(rl_frame_data_offset(&h), 128);
    CHECK_EQU(rl_frame_size(&h), 129);
    h.meta_len = 17; h.data_len = 0;
    CHECK_EQU(rl_frame_pad(&h), 0);
    CHECK_EQU(rl_frame_size(&h), 65);
    h.meta_len = UINT32_MAX; h.data_len = 1;
    CHECK_EQU(rl_frame_data_offset(&h), ((uint64_t)UINT32_MAX + 48 + 63) / 64 * 64);
    CHECK_EQU(rl_frame_data_offset(&h) % 64, 0);

    for (uint32_t m = 0; m < 1000; m++) {
        h.meta_len = m;
        h.data_len = 1 + m % 7;
        size_t off = rl_frame_data_offset(&h);
        size_t pad = rl_frame_pad(&h);
        if (!CHECK_EQU(off % RL_ALIGN, 0)) return;
        if (!CHECK(off >= RL_HEADER_SIZE + (size_t)m)) return;
        if (!CHECK(off - (RL_HEADER_SIZE + (size_t)m) < RL_ALIGN)) return;
        if (!CHECK_EQU(pad, off - RL_HEADER_SIZE - m)) return;
        if (!CHECK_EQU(rl_frame_size(&h), off + h.data_len)) return;
        h.data_len = 0;
        if (!CHECK_EQU(rl_frame_pad(&h), 0)) return;
        if (!CHECK_EQU(rl_frame_size(&h), RL_HEADER_SIZE + (uint64_t)m)) return;
    }
}

/* ------------------------------------------------------------------------ */
/* writer encodings                                                           */
/* ------------------------------------------------------------------------ */

static void test_writer_bytes(void) {
    rl_writer w;
    rl_writer_init(&w);
    /* {"a": 1} */
    rl_write_container(&w, RL_T_DICT, 1);
    rl_write_key(&w, "a", 1);
    rl_write_int(&w, 1);
    static const uint8_t want[] = {0x0A, 1, 0, 0, 0, 1, 0, 0, 0, 'a',
                                   0x03, 1, 0, 0, 0, 0, 0, 0, 0};
    CHECK(!w.failed);
    CHECK_EQU(w.len, sizeof want);
    CHECK(w.len == sizeof want && memcmp(w.buf, want, sizeof want) == 0);
    CHECK_EQU(w.data_len, 0);

    rl_writer_reset(&w);
    CHECK_EQU(w.len, 0);
    CHECK(w.buf != NULL);
    rl_write_none(&w);
    rl_write_bool(&w, 0);
    rl_write_bool(&w, 7);
    rl_write_int(&w, -2);
    rl_write_float(&w, 1.0);
    rl_write_str(&w, "hi", 2);
    rl_write_bytes(&w, "\x00\xff", 2);
    uint8_t big[9] = {0, 0, 0, 0, 0, 0, 0, 0, 1};
    rl_write_bigint(&w, big, 9);
    rl_write_container(&w, RL_T_TUPLE, 0);
    uint16_t s16 = 0xBEEF;
    rl_write_scalar(&w, RL_DT_UINT16, &s16);
    uint64_t shape[2] = {2, 3};
    CHECK_EQU(rl_write_array(&w, RL_DT_FLOAT32, 2, shape, RL_AF_FORTRAN, 24), 0);
    CHECK_EQU(w.data_len, 24);
    CHECK_EQU(rl_write_array(&w, RL_DT_UINT8, 0, NULL, 0, 1), 64);
    CHECK_EQU(w.data_len, 65);
    static const uint8_t want2[] = {
        0x00, 0x01, 0x02,
        0x03, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0x05, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F,
        0x06, 2, 0, 0, 0, 'h', 'i',
        0x07, 2, 0, 0, 0, 0x00, 0xFF,
        0x04, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        0x09, 0, 0, 0, 0,
        0x0C, RL_DT_UINT16, 0xEF, 0xBE,
        0x0B, RL_DT_FLOAT32, 2, 1, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
        0x0B, RL_DT_UINT8, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0};
    CHECK_EQU(w.len, sizeof want2);
    CHECK(w.len == sizeof want2 && memcmp(w.buf, want2, sizeof want2) == 0);
    rl_writer_free(&w);
    CHECK(w.buf == NULL);
    CHECK_EQU(w.len, 0);
    rl_writer_free(&w);   /* idempotent */
}

/* ------------------------------------------------------------------------ */
/* full tree round trip                                                       */
/* ------------------------------------------------------------------------ */

typedef struct scalar_case {
    unsigned dtype;
    uint8_t bytes[16];
} scalar_case;

static void scalar_cases(scalar_case *sc) {
    memset(sc, 0, sizeof(scalar_case) * RL_DT_MAX);
    for (unsigned d = 1; d <= RL_DT_MAX; d++) sc[d - 1].dtype = d;
    uint8_t b = 1;                 memcpy(sc[0].bytes, &b, 1);
    int8_t i8 = -5;                memcpy(sc[1].bytes, &i8, 1);
    int16_t i16 = -300;            memcpy(sc[2].bytes, &i16, 2);
    int32_t i32 = -70000;          memcpy(sc[3].bytes, &i32, 4);
    int64_t i64 = -50000000000LL;  memcpy(sc[4].bytes, &i64, 8);
    uint8_t u8 = 200;              memcpy(sc[5].bytes, &u8, 1);
    uint16_t u16 = 60000;          memcpy(sc[6].bytes, &u16, 2);
    uint32_t u32 = 4000000000u;    memcpy(sc[7].bytes, &u32, 4);
    uint64_t u64 = UINT64_MAX;     memcpy(sc[8].bytes, &u64, 8);
    uint16_t f16 = 0x3C00;         memcpy(sc[9].bytes, &f16, 2);  /* 1.0 */
    float f32 = 1.5f;              memcpy(sc[10].bytes, &f32, 4);
    double f64 = -2.25;            memcpy(sc[11].bytes, &f64, 8);
    float c64[2] = {1.0f, -2.0f};  memcpy(sc[12].bytes, c64, 8);
    double c128[2] = {3.0, 4.0};   memcpy(sc[13].bytes, c128, 16);
}

typedef struct array_case {
    unsigned dtype, ndim, aflags;
    uint64_t shape[4];
    uint64_t nbytes, offset;
} array_case;

static const array_case ARRAYS[] = {
    {RL_DT_FLOAT32, 2, 0, {2, 3, 0, 0}, 24, 0},
    {RL_DT_INT64, 0, 0, {0, 0, 0, 0}, 8, 64},               /* ndim 0 */
    {RL_DT_UINT8, 1, 0, {0, 0, 0, 0}, 0, 128},              /* empty */
    {RL_DT_COMPLEX128, 2, RL_AF_FORTRAN, {2, 2, 0, 0}, 64, 128},
    {RL_DT_BOOL, 1, 0, {5, 0, 0, 0}, 5, 192},
    {RL_DT_FLOAT16, 3, 0, {3, 0, 4, 0}, 0, 256},            /* zero-size */
    {RL_DT_UINT64, 4, RL_AF_FORTRAN, {1, 1, 1, 1}, 8, 256},
};
#define TREE_DATA_LEN 264u

static const char UNI_STR[] = "h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80";  /* hé☃😀 */
static const char UNI_KEY[] = "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87";            /* ключ */
static const uint8_t BIG[9] = {0, 0, 0, 0, 0, 0, 0, 0, 1};                    /* 2^64 */
static const uint8_t NEGBIG[12] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80};
static const int64_t INTS[] = {0, 1, -1, INT64_MIN, INT64_MAX};
static const uint64_t FLOAT_BITS[] = {
    0x400C000000000000ull,   /* 3.5 */
    0x8000000000000000ull,   /* -0.0 */
    0x7FF0000000000000ull,   /* inf */
    0x7FF8000000000001ull,   /* a nan with payload */
    0x0000000000000001ull};  /* smallest subnormal */

/* Build a tree that uses every tag, every dtype and several array shapes. */
static void build_tree(rl_writer *w) {
    rl_write_container(w, RL_T_DICT, 14);

    rl_write_key(w, "none", 4);
    rl_write_none(w);
    rl_write_key(w, "t", 1);
    rl_write_bool(w, 1);
    rl_write_key(w, "f", 1);
    rl_write_bool(w, 0);

    rl_write_key(w, "ints", 4);
    rl_write_container(w, RL_T_LIST, (uint32_t)RL_COUNTOF(INTS));
    for (size_t i = 0; i < RL_COUNTOF(INTS); i++) rl_write_int(w, INTS[i]);

    rl_write_key(w, "big", 3);
    rl_write_container(w, RL_T_TUPLE, 2);
    rl_write_bigint(w, BIG, sizeof BIG);
    rl_write_bigint(w, NEGBIG, sizeof NEGBIG);

    rl_write_key(w, "floats", 6);
    rl_write_container(w, RL_T_LIST, (uint32_t)RL_COUNTOF(FLOAT_BITS));
    for (size_t i = 0; i < RL_COUNTOF(FLOAT_BITS); i++) {
        double f;
        memcpy(&f, &FLOAT_BITS[i], 8);
        rl_write_float(w, f);
    }

    rl_write_key(w, "s", 1);
    rl_write_str(w, UNI_STR, (uint32_t)strlen(UNI_STR));
    rl_write_key(w, "empty", 5);
    rl_write_str(w, "", 0);

    rl_write_key(w, "b", 1);
    uint8_t all[256];
    for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
    rl_write_bytes(w, all, 256);

    rl_write_key(w, "", 0);                      /* empty key */
    rl_write_container(w, RL_T_LIST, 3);         /* [(), {}, [[1]]] */
    rl_write_container(w, RL_T_TUPLE, 0);
    rl_write_container(w, RL_T_DICT, 0);
    rl_write_container(w, RL_T_LIST, 1);
    rl_write_container(w, RL_T_LIST, 1);
    rl_write_int(w, 1);

    rl_write_key(w, UNI_KEY, (uint32_t)strlen(UNI_KEY));
    rl_write_container(w, RL_T_TUPLE, 2);        /* (1, "x") */
    rl_write_int(w, 1);
    rl_write_str(w, "x", 1);

    rl_write_key(w, "scalars", 7);
    scalar_case sc[RL_DT_MAX];
    scalar_cases(sc);
    rl_write_container(w, RL_T_LIST, RL_DT_MAX);
    for (unsigned d = 0; d < RL_DT_MAX; d++) rl_write_scalar(w, sc[d].dtype, sc[d].bytes);

    rl_write_key(w, "arrays", 6);
    rl_write_container(w, RL_T_LIST, (uint32_t)RL_COUNTOF(ARRAYS));
    for (size_t i = 0; i < RL_COUNTOF(ARRAYS); i++) {
        const array_case *a = &ARRAYS[i];
        uint64_t off = rl_write_array(w, a->dtype, a->ndim, a->shape, a->aflags, a->nbytes);
        CHECK_EQU(off, a->offset);
    }

    rl_write_key(w, "nested", 6);                /* {"k": {"k2": [None]}} */
    rl_write_container(w, RL_T_DICT, 1);
    rl_write_key(w, "k", 1);
    rl_write_container(w, RL_T_DICT, 1);
    rl_write_key(w, "k2", 2);
    rl_write_container(w, RL_T_LIST, 1);
    rl_write_none(w);
}

/* reading helpers: each returns 1 on success (and has CHECKed on failure) */
static int rd_tag(rl_reader *r, rl_item *it, unsigned tag) {
    return CHECK_EQ(rl_read_item(r, it), RL_OK) && CHECK_EQ(it->tag, tag);
}
static int rd_key(rl_reader *r, const char *k) {
    const uint8_t *p;
    uint32_t n;
    return CHECK_EQ(rl_read_key(r, &p, &n), RL_OK) && CHECK_EQU(n, strlen(k)) &&
           CHECK(memcmp(p, k, n) == 0);
}
static int rd_int(rl_reader *r, int64_t v) {
    rl_item it;
    return rd_tag(r, &it, RL_T_INT) && CHECK_EQ(it.u.i, v);
}
static int rd_count(rl_reader *r, unsigned tag, uint32_t count) {
    rl_item it;
    return rd_tag(r, &it, tag) && CHECK_EQU(it.u.count, count);
}
static int rd_blob(rl_reader *r, unsigned tag, const void *p, uint32_t n) {
    rl_item it;
    return rd_tag(r, &it, tag) && CHECK_EQU(it.u.s.n, n) &&
           CHECK(n == 0 || memcmp(it.u.s.p, p, n) == 0);
}

static void test_tree_roundtrip(void) {
    rl_writer w;
    rl_limits lim;
    rl_item it;
    rl_reader r;
    rl_limits_default(&lim);
    rl_writer_init(&w);
    build_tree(&w);
    if (!CHECK(!w.failed)) { rl_writer_free(&w); return; }
    CHECK_EQU(w.data_len, TREE_DATA_LEN);

    uint8_t *meta = dup_exact(w.buf, w.len);
    size_t len = w.len;
    unsigned root = 0;
    const char *why = "unset";
    CHECK_EQ(rl_meta_validate(meta, len, w.data_len, &lim, &root, &why), RL_OK);
    CHECK_EQ(root, RL_T_DICT);
    CHECK_EQ(validate_and_walk(meta, len, w.data_len, &lim), RL_OK);
    /* more data than the arrays use is fine */
    CHECK_EQ(validate(meta, len, w.data_len + 1000), RL_OK);
    /* one byte less is not (the last array ends at data_len) */
    CHECK_EQ(validate(meta, len, w.data_len - 1), RL_EPROTO);

    rl_reader_init(&r, meta, len, w.data_len, &lim);
    CHECK(rd_count(&r, RL_T_DICT, 14));
    CHECK(rd_key(&r, "none") && rd_tag(&r, &it, RL_T_NONE));
    CHECK(rd_key(&r, "t") && rd_tag(&r, &it, RL_T_TRUE));
    CHECK(rd_key(&r, "f") && rd_tag(&r, &it, RL_T_FALSE));

    CHECK(rd_key(&r, "ints") && rd_count(&r, RL_T_LIST, RL_COUNTOF(INTS)));
    for (size_t i = 0; i < RL_COUNTOF(INTS); i++) CHECK(rd_int(&r, INTS[i]));

    CHECK(rd_key(&r, "big") && rd_count(&r, RL_T_TUPLE, 2));
    CHECK(rd_blob(&r, RL_T_BIGINT, BIG, sizeof BIG));
    CHECK(rd_blob(&r, RL_T_BIGINT, NEGBIG, sizeof NEGBIG));

    CHECK(rd_key(&r, "floats") && rd_count(&r, RL_T_LIST, RL_COUNTOF(FLOAT_BITS)));
    for (size_t i = 0; i < RL_COUNTOF(FLOAT_BITS); i++) {
        if (CHECK(rd_tag(&r, &it, RL_T_FLOAT))) {
            uint64_t bits;
            memcpy(&bits, &it.u.f, 8);
            CHECK_EQU(bits, FLOAT_BITS[i]);
        }
    }
    CHECK(rd_key(&r, "s") && rd_blob(&r, RL_T_STR, UNI_STR, (uint32_t)strlen(UNI_STR)));
    CHECK(rd_key(&r, "empty") && rd_blob(&r, RL_T_STR, "", 0));

    uint8_t all[256];
    for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
    CHECK(rd_key(&r, "b") && rd_blob(&r, RL_T_BYTES, all, 256));

    CHECK(rd_key(&r, "") && rd_count(&r, RL_T_LIST, 3));
    CHECK(rd_count(&r, RL_T_TUPLE, 0));
    CHECK(rd_count(&r, RL_T_DICT, 0));
    CHECK(rd_count(&r, RL_T_LIST, 1));
    CHECK(rd_count(&r, RL_T_LIST, 1));
    CHECK(rd_int(&r, 1));

    CHECK(rd_key(&r, UNI_KEY) && rd_count(&r, RL_T_TUPLE, 2));
    CHECK(rd_int(&r, 1));
    CHECK(rd_blob(&r, RL_T_STR, "x", 1));

    CHECK(rd_key(&r, "scalars") && rd_count(&r, RL_T_LIST, RL_DT_MAX));
    scalar_case sc[RL_DT_MAX];
    scalar_cases(sc);
    for (unsigned d = 0; d < RL_DT_MAX; d++) {
        if (CHECK(rd_tag(&r, &it, RL_T_SCALAR))) {
            CHECK_EQ(it.u.scalar.dtype, sc[d].dtype);
            CHECK(memcmp(it.u.scalar.p, sc[d].bytes, rl_dtype_size(sc[d].dtype)) == 0);
        }
    }
    {   /* spot-check a few decoded scalar values */
        float c64[2];
        memcpy(c64, sc[12].bytes, 8);
        CHECK(c64[0] == 1.0f && c64[1] == -2.0f);
    }

    CHECK(rd_key(&r, "arrays") && rd_count(&r, RL_T_LIST, RL_COUNTOF(ARRAYS)));
    for (size_t i = 0; i < RL_COUNTOF(ARRAYS); i++) {
        const array_case *a = &ARRAYS[i];
        if (!CHECK(rd_tag(&r, &it, RL_T_ARRAY))) continue;
        CHECK_EQ(it.u.array.dtype, a->dtype);
        CHECK_EQ(it.u.array.ndim, a->ndim);
        CHECK_EQ(it.u.array.aflags, a->aflags);
        for (unsigned k = 0; k < a->ndim; k++) CHECK_EQU(it.u.array.shape[k], a->shape[k]);
        CHECK_EQU(it.u.array.offset, a->offset);
        CHECK_EQU(it.u.array.nbytes, a->nbytes);
        CHECK_EQU(it.u.array.offset % RL_ALIGN, 0);
    }

    CHECK(rd_key(&r, "nested") && rd_count(&r, RL_T_DICT, 1));
    CHECK(rd_key(&r, "k") && rd_count(&r, RL_T_DICT, 1));
    CHECK(rd_key(&r, "k2") && rd_count(&r, RL_T_LIST, 1));
    CHECK(rd_tag(&r, &it, RL_T_NONE));
    CHECK(r.p == r.end);
    /* past the end: an error, not a crash */
    CHECK_EQ(rl_read_item(&r, &it), RL_EPROTO);
    {
        const uint8_t *kp;
        uint32_t kn;
        CHECK_EQ(rl_read_key(&r, &kp, &kn), RL_EPROTO);
    }

    free(meta);
    rl_writer_free(&w);
}

/* Every root tag is accepted and reported. */
static void test_root_tags(void) {
    rl_writer w;
    rl_limits lim;
    rl_limits_default(&lim);
    rl_writer_init(&w);
    for (unsigned tag = 0; tag <= RL_T_SCALAR; tag++) {
        rl_writer_reset(&w);
        uint64_t data_len = 0;
        switch (tag) {
        case RL_T_NONE: rl_write_none(&w); break;
        case RL_T_FALSE: rl_write_bool(&w, 0); break;
        case RL_T_TRUE: rl_write_bool(&w, 1); break;
        case RL_T_INT: rl_write_int(&w, 5); break;
        case RL_T_BIGINT: rl_write_bigint(&w, BIG, 9); break;
        case RL_T_FLOAT: rl_write_float(&w, 0.5); break;
        case RL_T_STR: rl_write_str(&w, "a", 1); break;
        case RL_T_BYTES: rl_write_bytes(&w, "a", 1); break;
        case RL_T_LIST: case RL_T_TUPLE: case RL_T_DICT: rl_write_container(&w, tag, 0); break;
        case RL_T_ARRAY: {
            uint64_t shape[1] = {3};
            rl_write_array(&w, RL_DT_INT32, 1, shape, 0, 12);
            data_len = w.data_len;
            break;
        }
        case RL_T_SCALAR: { double v = 1; rl_write_scalar(&w, RL_DT_FLOAT64, &v); break; }
        }
        unsigned root = 0xFFFF;
        CHECK_EQ(rl_meta_validate(w.buf, w.len, data_len, &lim, &root, NULL), RL_OK);
        CHECK_EQ(root, tag);
    }
    rl_writer_free(&w);
}

/* ------------------------------------------------------------------------ */
/* validator rejections                                                       */
/* ------------------------------------------------------------------------ */

static void test_reject_truncation(void) {
    rl_writer w;
    rl_writer_init(&w);
    build_tree(&w);
    for (size_t n = 0; n < w.len; n++) {
        int rc = validate(w.buf, n, w.data_len);
        if (!CHECK(rc == RL_EPROTO || rc == RL_ELIMIT)) {
            printf("  (prefix of %zu bytes of %zu accepted)\n", n, w.len);
            break;
        }
    }
    /* also with the data section shrunk to nothing */
    for (size_t n = 0; n < w.len; n++)
        if (!CHECK(validate(w.buf, n, 0) != RL_OK)) break;
    CHECK_EQ(validate(w.buf, w.len, w.data_len), RL_OK);
    rl_writer_free(&w);
}

static void test_reject_trailing(void) {
    rl_writer w;
    rl_writer_init(&w);
    build_tree(&w);
    bb b = {0};
    bb_put(&b, w.buf, w.len);
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_bb(&b, w.data_len), RL_EPROTO);
    bb_free(&b);

    /* two roots */
    static const uint8_t two[] = {RL_T_NONE, RL_T_NONE};
    CHECK_EQ(validate(two, 2, 0), RL_EPROTO);
    static const uint8_t one_pad[] = {RL_T_TRUE, 0};
    CHECK_EQ(validate(one_pad, 2, 0), RL_EPROTO);
    /* empty meta: no root */
    CHECK_EQ(validate(two, 0, 0), RL_EPROTO);
    rl_writer_free(&w);
}

static void test_reject_unknown_tag(void) {
    for (unsigned tag = RL_T_SCALAR + 1; tag < 256; tag++) {
        uint8_t m[1] = {(uint8_t)tag};
        CHECK_EQ(validate(m, 1, 0), RL_EPROTO);
        /* as a list element and a dict value */
        bb b = {0};
        bb_tagu32(&b, RL_T_LIST, 2);
        bb_u8(&b, RL_T_NONE);
        bb_u8(&b, tag);
        CHECK_EQ(validate_bb(&b, 0), RL_EPROTO);
        bb_free(&b);
        bb_tagu32(&b, RL_T_DICT, 1);
        bb_key(&b, "k");
        bb_u8(&b, tag);
        bb_put(&b, "\0\0\0\0\0\0\0\0", 8);
        CHECK_EQ(validate_bb(&b, 0), RL_EPROTO);
        bb_free(&b);
    }
}

static void test_reject_dtype(void) {
    static const unsigned bad[] = {0, RL_DT_MAX + 1, 16, 0x7F, 0xFF};
    for (size_t i = 0; i < RL_COUNTOF(bad); i++) {
        bb b = {0};
        bb_u8(&b, RL_T_SCALAR);
        bb_u8(&b, bad[i]);
        bb_put(&b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
        CHECK_EQ(validate_bb(&b, 0), RL_EPROTO);
        bb_free(&b);
        uint64_t shape[1] = {1};
        bb_array(&b, bad[i], 1, shape, 0, 0);
        CHECK_EQ(validate_bb(&b, 1024), RL_EPROTO);
        bb_free(&b);
    }
    /* every valid dtype is accepted in both positions */
    for (unsigned d = 1; d <= RL_DT_MAX; d++) {
        bb b = {0};
        bb_u8(&b, RL_T_SCALAR);
        bb_u8(&b, d);
        bb_put(&b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", rl_dtype_size(d));
        CHECK_EQ(validate_bb(&b, 0), RL_OK);
        /* scalar one byte short */
        b.len--;
        CHECK_EQ(validate_bb(&b, 0), RL_EPROTO);
        bb_free(&b);
        uint64_t shape[1] = {3};
        bb_array(&b, d, 1, shape, 0, 0);
        CHECK_EQ(validate_bb(&b, 3 * rl_dtype_size(d)), RL_OK);
        CHECK_EQ(validate_bb(&b, 3 * rl_dtype_size(d) - 1), RL_EPROTO);
        bb_free(&b);
    }
}

static void test_reject_array_flags(void) {
    for (unsigned f = 0; f < 256; f++) {
        bb b = {0};
        uint64_t shape[1] = {1};
        bb_array(&b, RL_DT_UINT8, 1, shape, f, 0);
        CHECK_EQ(validate_bb(&b, 64), f <= RL_AF_FORTRAN ? RL_OK : RL_EPROTO);
        bb_free(&b);
    }
}

static void test_reject_ndim(void) {
    uint64_t shape[40];
    for (int i = 0; i < 40; i++) shape[i] = 1;
    bb b = {0};
    bb_array(&b, RL_DT_UINT8, RL_MAX_NDIM, shape, 0, 0);
    CHECK_EQ(validate_bb(&b, 64), RL_OK);
    bb_free(&b);
    bb_array(&b, RL_DT_UINT8, RL_MAX_NDIM + 1, shape, 0, 0);
    CHECK_EQ(validate_bb(&b, 64), RL_ELIMIT);
    bb_free(&b);
    /* ndim 255, with and without the bytes to back it */
    bb_array(&b, RL_DT_UINT8, 3, shape, 0, 0);
    b.p[2] = 255;
    CHECK_EQ(validate_bb(&b, 64), RL_ELIMIT);
    bb_free(&b);

    /* a configured limit below RL_MAX_NDIM */
    rl_limits lim;
    rl_limits_default(&lim);
    lim.max_ndim = 2;
    bb_array(&b, RL_DT_UINT8, 2, shape, 0, 0);
    CHECK_EQ(validate_lim(b.p, b.len, 64, &lim), RL_OK);
    bb_free(&b);
    bb_array(&b, RL_DT_UINT8, 3, shape, 0, 0);
    CHECK_EQ(validate_lim(b.p, b.len, 64, &lim), RL_ELIMIT);
    bb_free(&b);
    /* a configured limit above RL_MAX_NDIM is capped */
    lim.max_ndim = 1000;
    bb_array(&b, RL_DT_UINT8, 3, shape, 0, 0);
    b.p[2] = RL_MAX_NDIM + 1;
    for (int i = 0; i < 40; i++) bb_u64(&b, 1);
    CHECK_EQ(validate_lim(b.p, b.len, 64, &lim), RL_ELIMIT);
    bb_free(&b);
}

static void test_reject_shape(void) {
    bb b = {0};
    const uint64_t big = (uint64_t)1 << 32;
    /* product overflows u64: 8 * 2^32 * 2^32 */
    uint64_t s1[2] = {big, big};
    bb_array(&b, RL_DT_FLOAT64, 2, s1, 0, 0);
    CHECK_EQ(validate_bb(&b, UINT64_MAX), RL_EPROTO);
    bb_free(&b);
    /* 2^62 * 2^62 bytes */
    uint64_t s2[2] = {(uint64_t)1 << 62, (uint64_t)1 << 62};
    bb_array(&b, RL_DT_UINT8, 2, s2, 0, 0);
    CHECK_EQ(validate_bb(&b, UINT64_MAX), RL_EPROTO);
    bb_free(&b);
    /* overflow only through the item size: 2^61 complex128 */
    uint64_t s3[1] = {(uint64_t)1 << 61};
    bb_array(&b, RL_DT_COMPLEX128, 1, s3, 0, 0);
    CHECK_EQ(validate_bb(&b, UINT64_MAX), RL_EPROTO);
    bb_free(&b);
    /* many small dims whose product overflows */
    uint64_t s4[RL_MAX_NDIM];
    for (unsigned i = 0; i < RL_MAX_NDIM; i++) s4[i] = 7;
    bb_array(&b, RL_DT_UINT8, RL_MAX_NDIM, s4, 0, 0);
    CHECK_EQ(validate_bb(&b, UINT64_MAX), RL_EPROTO);
    bb_free(&b);

    /* a dimension >= 2^63, even when another dimension is zero */
    static const uint64_t bad_dims[] = {(uint64_t)1 << 63, ((uint64_t)1 << 63) + 1,
                                        UINT64_MAX};
    for (size_t i = 0; i < RL_COUNTOF(bad_dims); i++) {
        uint64_t s[2] = {bad_dims[i], 1};
        bb_array(&b, RL_DT_UINT8, 1, s, 0, 0);
        CHECK_EQ(validate_bb(&b, UINT64_MAX), RL_EPROTO);
        bb_free(&b);
        uint64_t z[2] = {0, bad_dims[i]};
        bb_array(&b, RL_DT_UINT8, 2, z, 0, 0);
        CHECK_EQ(validate_bb(&b, UINT64_MAX), RL_EPROTO);
        bb_free(&b);
    }
    /* an empty array whose other dimensions numpy could not represent
     * (itemsize * 2^62 >= 2^63 for float64) */
    uint64_t s6[2] = {0, (uint64_t)1 << 62};
    bb_array(&b, RL_DT_FLOAT64, 2, s6, 0, 0);
    CHECK_EQ(validate_bb(&b, UINT64_MAX), RL_EPROTO);
    bb_free(&b);
    /* a zero dimension makes an empty array regardless of the others */
    uint64_t s5[3] = {1000, 0, 1000};
    bb_array(&b, RL_DT_FLOAT64, 3, s5, 0, 0);
    CHECK_EQ(validate_bb(&b, 0), RL_OK);
    bb_free(&b);
}

static void test_reject_array_placement(void) {
    bb b = {0};
    uint64_t s100[1] = {100};
    uint64_t s0[1] = {0};
    uint64_t s1[1] = {1};
    uint64_t s128[1] = {128};
    uint64_t s64[1] = {64};

    /* offset not a multiple of 64 */
    static const uint64_t bad_off[] = {1, 8, 32, 63, 65, 1000};
    for (size_t i = 0; i < RL_COUNTOF(bad_off); i++) {
        bb_array(&b, RL_DT_UINT8, 1, s1, 0, bad_off[i]);
        CHECK_EQ(validate_bb(&b, 4096), RL_EPROTO);
        bb_free(&b);
        bb_array(&b, RL_DT_UINT8, 1, s0, 0, bad_off[i]);   /* even when empty */
        CHECK_EQ(validate_bb(&b, 4096), RL_EPROTO);
        bb_free(&b);
    }

    /* past data_len */
    bb_array(&b, RL_DT_UINT8, 1, s100, 0, 0);
    CHECK_EQ(validate_bb(&b, 100), RL_OK);
    CHECK_EQ(validate_bb(&b, 99), RL_EPROTO);
    CHECK_EQ(validate_bb(&b, 0), RL_EPROTO);
    bb_free(&b);
    bb_array(&b, RL_DT_UINT8, 1, s0, 0, 64);    /* empty array at the very end */
    CHECK_EQ(validate_bb(&b, 64), RL_OK);
    bb_free(&b);
    bb_array(&b, RL_DT_UINT8, 1, s0, 0, 128);   /* empty, but starts past the end */
    CHECK_EQ(validate_bb(&b, 64), RL_EPROTO);
    bb_free(&b);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 64);
    CHECK_EQ(validate_bb(&b, 64), RL_EPROTO);
    CHECK_EQ(validate_bb(&b, 65), RL_OK);
    bb_free(&b);
    /* offset + nbytes would wrap */
    bb_array(&b, RL_DT_UINT8, 1, s128, 0, UINT64_MAX - 63);
    CHECK_EQ(validate_bb(&b, UINT64_MAX), RL_EPROTO);
    bb_free(&b);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, UINT64_MAX - 63);
    CHECK_EQ(validate_bb(&b, 1024), RL_EPROTO);
    bb_free(&b);

    /* overlapping arrays */
    bb_tagu32(&b, RL_T_LIST, 2);
    bb_array(&b, RL_DT_UINT8, 1, s128, 0, 0);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 64);
    CHECK_EQ(validate_bb(&b, 4096), RL_EPROTO);
    bb_free(&b);
    /* the same offset twice */
    bb_tagu32(&b, RL_T_LIST, 2);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 0);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 0);
    CHECK_EQ(validate_bb(&b, 4096), RL_EPROTO);
    bb_free(&b);
    /* out of order (even if disjoint) */
    bb_tagu32(&b, RL_T_LIST, 2);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 64);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 0);
    CHECK_EQ(validate_bb(&b, 4096), RL_EPROTO);
    bb_free(&b);
    /* adjacent is fine */
    bb_tagu32(&b, RL_T_LIST, 2);
    bb_array(&b, RL_DT_UINT8, 1, s64, 0, 0);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 64);
    CHECK_EQ(validate_bb(&b, 65), RL_OK);
    bb_free(&b);
    /* gaps are fine */
    bb_tagu32(&b, RL_T_LIST, 2);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 0);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 640);
    CHECK_EQ(validate_bb(&b, 641), RL_OK);
    bb_free(&b);
    /* arrays in different containers still may not overlap */
    bb_tagu32(&b, RL_T_DICT, 2);
    bb_key(&b, "a");
    bb_tagu32(&b, RL_T_LIST, 1);
    bb_array(&b, RL_DT_UINT8, 1, s128, 0, 0);
    bb_key(&b, "b");
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 64);
    CHECK_EQ(validate_bb(&b, 4096), RL_EPROTO);
    bb_free(&b);
}

static void test_reject_counts(void) {
    bb b = {0};
    /* a dict claiming a million entries in a short buffer */
    bb_tagu32(&b, RL_T_DICT, 1000000);
    bb_key(&b, "a");
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_bb(&b, 0), RL_EPROTO);
    bb_free(&b);
    bb_tagu32(&b, RL_T_LIST, 1000000);
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_bb(&b, 0), RL_EPROTO);
    bb_free(&b);
    /* counts beyond max_items */
    bb_tagu32(&b, RL_T_TUPLE, UINT32_MAX);
    CHECK_EQ(validate_bb(&b, 0), RL_ELIMIT);
    bb_free(&b);
    bb_tagu32(&b, RL_T_DICT, UINT32_MAX);
    CHECK_EQ(validate_bb(&b, 0), RL_ELIMIT);
    bb_free(&b);
    /* a dict whose count fits the bytes at one byte per entry, but not at the
     * five bytes a key and a value take at least */
    bb_tagu32(&b, RL_T_DICT, 4);
    bb_key(&b, "");
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_bb(&b, 0), RL_EPROTO);
    bb_free(&b);
    /* the reader refuses such a count at the container header itself, so a
     * consumer never sizes anything from it */
    {
        rl_limits lim;
        rl_reader r;
        rl_item it;
        rl_limits_default(&lim);
        bb_tagu32(&b, RL_T_DICT, 4);
        for (int i = 0; i < 19; i++) bb_u8(&b, 0);
        uint8_t *m = dup_exact(b.p, b.len);
        rl_reader_init(&r, m, b.len, 0, &lim);
        CHECK_EQ(rl_read_item(&r, &it), RL_EPROTO);          /* 19 < 4 * 5 */
        free(m);
        bb_u8(&b, 0);
        m = dup_exact(b.p, b.len);
        rl_reader_init(&r, m, b.len, 0, &lim);
        CHECK_EQ(rl_read_item(&r, &it), RL_OK);              /* 20 == 4 * 5 */
        CHECK_EQU(it.u.count, 4);
        free(m);
        bb_free(&b);
        bb_tagu32(&b, RL_T_LIST, 4);
        for (int i = 0; i < 3; i++) bb_u8(&b, 0);
        m = dup_exact(b.p, b.len);
        rl_reader_init(&r, m, b.len, 0, &lim);
        CHECK_EQ(rl_read_item(&r, &it), RL_EPROTO);          /* 3 < 4 * 1 */
        free(m);
        bb_free(&b);
    }
    /* one element missing */
    bb_tagu32(&b, RL_T_LIST, 3);
    bb_u8(&b, RL_T_NONE);
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_bb(&b, 0), RL_EPROTO);
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_bb(&b, 0), RL_OK);
    bb_free(&b);
}

static void test_reject_depth(void) {
    rl_limits lim;
    rl_limits_default(&lim);
    bb b = {0};
    /* exactly max_depth nested containers: fine */
    for (unsigned i = 0; i < lim.max_depth; i++) bb_tagu32(&b, RL_T_LIST, 1);
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_bb(&b, 0), RL_OK);
    bb_free(&b);
    /* one more: too deep */
    for (unsigned i = 0; i < lim.max_depth + 1; i++) bb_tagu32(&b, RL_T_LIST, 1);
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_bb(&b, 0), RL_ELIMIT);
    bb_free(&b);
    /* depth counts dicts and tuples too */
    for (unsigned i = 0; i < lim.max_depth + 1; i++) {
        if (i % 3 == 0) bb_tagu32(&b, RL_T_LIST, 1);
        else if (i % 3 == 1) bb_tagu32(&b, RL_T_TUPLE, 1);
        else { bb_tagu32(&b, RL_T_DICT, 1); bb_key(&b, "k"); }
    }
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_bb(&b, 0), RL_ELIMIT);
    bb_free(&b);

    /* 100,000 nested list headers */
    for (unsigned i = 0; i < 100000; i++) bb_tagu32(&b, RL_T_LIST, 1);
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_bb(&b, 0), RL_ELIMIT);
    /* with a configured max_depth above RL_MAX_DEPTH (capped to it) */
    lim.max_depth = 1000000;
    CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_ELIMIT);
    lim.max_depth = RL_MAX_DEPTH;
    CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_ELIMIT);
    /* RL_MAX_DEPTH levels are accepted when the limit allows it */
    CHECK_EQ(validate_lim(b.p + 5 * (100000 - RL_MAX_DEPTH), 5 * RL_MAX_DEPTH + 1, 0, &lim),
             RL_OK);
    CHECK_EQ(validate_lim(b.p + 5 * (100000 - RL_MAX_DEPTH - 1), 5 * (RL_MAX_DEPTH + 1) + 1,
                          0, &lim),
             RL_ELIMIT);
    lim.max_depth = 1000000;
    CHECK_EQ(validate_lim(b.p + 5 * (100000 - RL_MAX_DEPTH - 1), 5 * (RL_MAX_DEPTH + 1) + 1,
                          0, &lim),
             RL_ELIMIT);
    /* max_depth 0: only scalars at the root */
    lim.max_depth = 0;
    CHECK_EQ(validate_lim(b.p + 5 * 99999, 6, 0, &lim), RL_ELIMIT);
    CHECK_EQ(validate_lim(b.p + 5 * 100000, 1, 0, &lim), RL_OK);
    bb_free(&b);

    /* siblings do not add depth: 63 levels of [[], {}, <next level>] (the
     * empty containers at level 63 are at depth 64) */
    for (unsigned i = 0; i < 63; i++) {
        bb_tagu32(&b, RL_T_LIST, 3);
        bb_tagu32(&b, RL_T_LIST, 0);
        bb_tagu32(&b, RL_T_DICT, 0);
    }
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_bb(&b, 0), RL_OK);
    bb_free(&b);
    /* and the depth goes back down after a container closes: 3000 siblings
     * each nested 60 deep */
    bb_tagu32(&b, RL_T_LIST, 3000);
    for (unsigned s = 0; s < 3000; s++) {
        for (unsigned i = 0; i < 60; i++) bb_tagu32(&b, RL_T_TUPLE, 1);
        bb_u8(&b, RL_T_TRUE);
    }
    CHECK_EQ(validate_bb(&b, 0), RL_OK);
    bb_free(&b);
}

static const char *const BAD_UTF8[] = {
    "\x80",                  /* lone continuation byte */
    "\xbf",
    "\xc0\x80",              /* overlong NUL */
    "\xc1\xbf",              /* overlong */
    "\xe0\x80\xaf",          /* overlong '/' */
    "\xe0\x9f\xbf",          /* overlong U+07FF */
    "\xf0\x80\x80\x80",      /* overlong NUL */
    "\xf0\x8f\xbf\xbf",      /* overlong U+FFFF */
    "\xed\xa0\x80",          /* surrogate U+D800 */
    "\xed\xbf\xbf",          /* surrogate U+DFFF */
    "\xed\xa0\xbd\xed\xb8\x80", /* CESU-8 surrogate pair */
    "\xe2\x82",              /* truncated 3-byte sequence */
    "\xe2",
    "\xf0\x9f\x98",          /* truncated 4-byte sequence */
    "\xc3",                  /* truncated 2-byte sequence */
    "a\xc3",
    "\xc3\x28",              /* bad continuation */
    "\xe2\x28\xa1",
    "\xf4\x90\x80\x80",      /* above U+10FFFF */
    "\xf5\x80\x80\x80",
    "\xf7\xbf\xbf\xbf",
    "\xf8\x88\x80\x80\x80",  /* 5-byte form */
    "\xfc\x84\x80\x80\x80\x80",
    "\xfe",
    "\xff",
    "ok\xff",
};

static void test_reject_utf8(void) {
    for (size_t i = 0; i < RL_COUNTOF(BAD_UTF8); i++) {
        const char *s = BAD_UTF8[i];
        uint32_t n = (uint32_t)strlen(s);
        bb b = {0};
        /* as a key */
        bb_tagu32(&b, RL_T_DICT, 1);
        bb_u32(&b, n);
        bb_put(&b, s, n);
        bb_u8(&b, RL_T_NONE);
        if (!CHECK_EQ(validate_bb(&b, 0), RL_EPROTO)) printf("  (key case %zu)\n", i);
        bb_free(&b);
        /* as a str, at the root and nested */
        bb_blob(&b, RL_T_STR, s, n);
        if (!CHECK_EQ(validate_bb(&b, 0), RL_EPROTO)) printf("  (str case %zu)\n", i);
        bb_free(&b);
        bb_tagu32(&b, RL_T_DICT, 1);
        bb_key(&b, "k");
        bb_tagu32(&b, RL_T_LIST, 2);
        bb_u8(&b, RL_T_NONE);
        bb_blob(&b, RL_T_STR, s, n);
        CHECK_EQ(validate_bb(&b, 0), RL_EPROTO);
        bb_free(&b);
        /* the same bytes are fine as BYTES */
        bb_blob(&b, RL_T_BYTES, s, n);
        CHECK_EQ(validate_bb(&b, 0), RL_OK);
        bb_free(&b);
    }
}

static void test_reject_bigint(void) {
    static const uint8_t z[16] = {0};
    for (uint32_t n = 0; n < 16; n++) {
        bb b = {0};
        bb_blob(&b, RL_T_BIGINT, z, n);
        CHECK_EQ(validate_bb(&b, 0), n < 9 ? RL_EPROTO : RL_OK);
        bb_free(&b);
    }
}

static void test_reject_str_limit(void) {
    rl_limits lim;
    rl_limits_default(&lim);
    lim.max_str_bytes = 9;
    static const char s[] = "0123456789";
    static const unsigned tags[] = {RL_T_STR, RL_T_BYTES, RL_T_BIGINT};
    for (size_t t = 0; t < RL_COUNTOF(tags); t++) {
        bb b = {0};
        bb_blob(&b, tags[t], s, 9);
        CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_OK);
        bb_free(&b);
        bb_blob(&b, tags[t], s, 10);
        CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_ELIMIT);
        bb_free(&b);
    }
    /* keys */
    bb b = {0};
    bb_tagu32(&b, RL_T_DICT, 1);
    bb_u32(&b, 9);
    bb_put(&b, s, 9);
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_OK);
    bb_free(&b);
    bb_tagu32(&b, RL_T_DICT, 1);
    bb_u32(&b, 10);
    bb_put(&b, s, 10);
    bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_ELIMIT);
    bb_free(&b);
    /* default limit: a length just over 64 MiB in a short buffer is a limit
     * error, a length under it a truncation error */
    bb_tagu32(&b, RL_T_STR, (1u << 26) + 1);
    bb_put(&b, "abc", 3);
    CHECK_EQ(validate_bb(&b, 0), RL_ELIMIT);
    bb_free(&b);
    bb_tagu32(&b, RL_T_STR, 1u << 26);
    bb_put(&b, "abc", 3);
    CHECK_EQ(validate_bb(&b, 0), RL_EPROTO);
    bb_free(&b);
    bb_tagu32(&b, RL_T_BYTES, UINT32_MAX);
    CHECK_EQ(validate_bb(&b, 0), RL_ELIMIT);
    bb_free(&b);
}

static void test_reject_items_and_arrays(void) {
    rl_limits lim;
    rl_limits_default(&lim);
    lim.max_items = 4;
    bb b = {0};
    bb_tagu32(&b, RL_T_LIST, 3);   /* 1 + 3 = 4 items */
    for (int i = 0; i < 3; i++) bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_OK);
    bb_free(&b);
    bb_tagu32(&b, RL_T_LIST, 4);   /* 5 items */
    for (int i = 0; i < 4; i++) bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_ELIMIT);
    bb_free(&b);
    bb_tagu32(&b, RL_T_LIST, 5);   /* the count alone is over */
    for (int i = 0; i < 5; i++) bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_ELIMIT);
    bb_free(&b);
    /* items across nested containers add up; keys are not items */
    bb_tagu32(&b, RL_T_DICT, 1);
    bb_key(&b, "a");
    bb_tagu32(&b, RL_T_LIST, 1);
    bb_tagu32(&b, RL_T_LIST, 1);
    bb_u8(&b, RL_T_NONE);           /* 4 items */
    CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_OK);
    bb_free(&b);
    bb_tagu32(&b, RL_T_LIST, 1);
    bb_tagu32(&b, RL_T_LIST, 1);
    bb_tagu32(&b, RL_T_LIST, 1);
    bb_tagu32(&b, RL_T_LIST, 1);
    bb_u8(&b, RL_T_NONE);           /* 5 items */
    CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_ELIMIT);
    bb_free(&b);

    /* default max_items: 2^20 values */
    rl_limits_default(&lim);
    bb_tagu32(&b, RL_T_LIST, (1u << 20) - 1);
    for (uint32_t i = 0; i < (1u << 20) - 1; i++) bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_OK);
    bb_free(&b);
    bb_tagu32(&b, RL_T_LIST, 1u << 20);
    for (uint32_t i = 0; i < (1u << 20); i++) bb_u8(&b, RL_T_NONE);
    CHECK_EQ(validate_lim(b.p, b.len, 0, &lim), RL_ELIMIT);
    bb_free(&b);

    /* max_arrays */
    lim.max_arrays = 2;
    uint64_t s1[1] = {1};
    bb_tagu32(&b, RL_T_LIST, 2);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 0);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 64);
    CHECK_EQ(validate_lim(b.p, b.len, 65, &lim), RL_OK);
    bb_free(&b);
    bb_tagu32(&b, RL_T_LIST, 3);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 0);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 64);
    bb_array(&b, RL_DT_UINT8, 1, s1, 0, 128);
    CHECK_EQ(validate_lim(b.p, b.len, 129, &lim), RL_ELIMIT);
    bb_free(&b);
}

/* ------------------------------------------------------------------------ */
/* mutation and random fuzzing                                                */
/* ------------------------------------------------------------------------ */

static void test_meta_mutations(void) {
    rl_writer w;
    rl_limits lim;
    rl_limits_default(&lim);
    rl_writer_init(&w);
    build_tree(&w);
    uint8_t *m = dup_exact(w.buf, w.len);
    unsigned long accepted = 0, rejected = 0;
    for (size_t pos = 0; pos < w.len; pos++) {
        for (unsigned v = 0; v < 256; v++) {
            memcpy(m, w.buf, w.len);
            m[pos] = (uint8_t)v;
            int rc = validate_and_walk(m, w.len, w.data_len, &lim);
            if (rc == RL_OK) accepted++;
            else rejected++;
            if (rl_test_g.failures > 0) goto done;
        }
    }
done:
    /* sanity: both outcomes happen (payload bytes, and structure bytes) */
    CHECK(accepted > 0);
    CHECK(rejected > 0);
    free(m);
    rl_writer_free(&w);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {   /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static void test_meta_random(void) {
    rl_writer w;
    rl_limits lim;
    rl_limits_default(&lim);
    lim.max_depth = 16;
    rl_writer_init(&w);
    build_tree(&w);
    uint8_t *m = malloc(w.len);
    if (!m) exit(2);
    /* several random byte changes at once, plus a random length cut */
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(m, w.buf, w.len);
        int k = 1 + (int)(rng() % 6);
        for (int j = 0; j < k; j++) m[rng() % w.len] = (uint8_t)rng();
        size_t len = (rng() % 4 == 0) ? (size_t)(rng() % (w.len + 1)) : w.len;
        uint64_t dl = (rng() % 8 == 0) ? rng() % 1024 : w.data_len;
        validate_and_walk(m, len, dl, &lim);
        if (rl_test_g.failures > 0) break;
    }
    /* pure noise, biased toward small tags and counts */
    uint8_t noise[256];
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = (size_t)(rng() % sizeof noise);
        for (size_t j = 0; j < len; j++) {
            uint64_t x = rng();
            noise[j] = (x & 0x300) ? (uint8_t)(x % 14) : (uint8_t)(x >> 16);
        }
        validate_and_walk(noise, len, rng() % 512, &lim);
        if (rl_test_g.failures > 0) break;
    }
    free(m);
    rl_writer_free(&w);
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                      */
/* ------------------------------------------------------------------------ */

static int utf8(const char *s, size_t n) {
    uint8_t *c = dup_exact((const uint8_t *)s, n);
    int v = rl_utf8_valid(c, n);
    free(c);
    return v;
}
#define UTF8(lit) utf8((lit), sizeof(lit) - 1)

static void test_checksum_header_field(void) {
    rl_header h, d;
    uint8_t b[RL_HEADER_SIZE];
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_TRAJ;
    h.flags = RL_FLAG_CHECKSUM;
    h.crc = 0xDEADBEEFu;
    rl_header_encode(&h, b);
    CHECK_EQ(rl_header_decode(b, 1 << 20, &d), RL_OK);
    CHECK_EQU(d.crc, 0xDEADBEEFu);
    /* a crc without the flag is malformed */
    h.flags = 0;
    rl_header_encode(&h, b);
    CHECK_EQ(rl_header_decode(b, 1 << 20, &d), RL_EPROTO);
}

static void test_utf8(void) {
    CHECK(utf8("", 0));
    CHECK(rl_utf8_valid(NULL, 0));
    CHECK(UTF8("hello"));
    CHECK(UTF8("\x00"));                 /* NUL is valid UTF-8 */
    CHECK(UTF8("\x7f"));
    CHECK(UTF8("\xc2\x80"));             /* U+0080 */
    CHECK(UTF8("\xdf\xbf"));             /* U+07FF */
    CHECK(UTF8("\xe0\xa0\x80"));         /* U+0800 */
    CHECK(UTF8("\xed\x9f\xbf"));         /* U+D7FF */
    CHECK(UTF8("\xee\x80\x80"));         /* U+E000 */
    CHECK(UTF8("\xef\xbf\xbd"));         /* U+FFFD */
    CHECK(UTF8("\xef\xbf\xbf"));         /* U+FFFF */
    CHECK(UTF8("\xf0\x90\x80\x80"));     /* U+10000 */
    CHECK(UTF8("\xf4\x8f\xbf\xbf"));     /* U+10FFFF */
    CHECK(UTF8("h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80"));
    CHECK(UTF8("\xef\xbb\xbf" "bom"));   /* a BOM is just U+FEFF */

    for (size_t i = 0; i < RL_COUNTOF(BAD_UTF8); i++)
        if (!CHECK(!utf8(BAD_UTF8[i], strlen(BAD_UTF8[i])))) printf("  (case %zu)\n", i);

    /* the length is respected: a valid prefix of a longer sequence */
    CHECK(utf8("ab\xe2\x82\xac", 2));
    CHECK(!utf8("ab\xe2\x82\xac", 4));
    CHECK(utf8("ab\xe2\x82\xac", 5));

    /* exhaustive over all 1- and 2-byte inputs against a reference */
    for (unsigned a = 0; a < 256; a++) {
        char s1[1] = {(char)a};
        if (!CHECK_EQ(utf8(s1, 1), a < 0x80)) break;
        for (unsigned b = 0; b < 256; b++) {
            char s2[2] = {(char)a, (char)b};
            int want = (a < 0x80 && b < 0x80) ||
                       (a >= 0xC2 && a <= 0xDF && b >= 0x80 && b <= 0xBF);
            if (!CHECK_EQ(utf8(s2, 2), want)) { a = 256; break; }
        }
    }
    /* every code point, encoded by hand, round-trips as valid; surrogates not */
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp += (cp < 0x20000 ? 1 : 97)) {
        uint8_t e[4];
        size_t n;
        if (cp < 0x80) { e[0] = (uint8_t)cp; n = 1; }
        else if (cp < 0x800) { e[0] = (uint8_t)(0xC0 | cp >> 6); e[1] = (uint8_t)(0x80 | (cp & 0x3F)); n = 2; }
        else if (cp < 0x10000) {
            e[0] = (uint8_t)(0xE0 | cp >> 12); e[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            e[2] = (uint8_t)(0x80 | (cp & 0x3F)); n = 3;
        } else {
            e[0] = (uint8_t)(0xF0 | cp >> 18); e[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
            e[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)); e[3] = (uint8_t)(0x80 | (cp & 0x3F)); n = 4;
        }
        int want = !(cp >= 0xD800 && cp <= 0xDFFF);
        if (!CHECK_EQ(rl_utf8_valid(e, n), want)) break;
    }
}

/* ------------------------------------------------------------------------ */

static const rl_test frame_tests[] = {
    RL_TEST(test_strerror_and_dtypes),
    RL_TEST(test_limits_default),
    RL_TEST(test_hello_roundtrip),
    RL_TEST(test_hello_bad_magic),
    RL_TEST(test_hello_version),
    RL_TEST(test_hello_fields),
    RL_TEST(test_hello_mutations),
    RL_TEST(test_header_roundtrip),
    RL_TEST(test_header_rejects),
    RL_TEST(test_header_empty_kinds),
    RL_TEST(test_header_mutations),
    RL_TEST(test_frame_pad),
    RL_TEST(test_writer_bytes),
    RL_TEST(test_tree_roundtrip),
    RL_TEST(test_root_tags),
    RL_TEST(test_reject_truncation),
    RL_TEST(test_reject_trailing),
    RL_TEST(test_reject_unknown_tag),
    RL_TEST(test_reject_dtype),
    RL_TEST(test_reject_array_flags),
    RL_TEST(test_reject_ndim),
    RL_TEST(test_reject_shape),
    RL_TEST(test_reject_array_placement),
    RL_TEST(test_reject_counts),
    RL_TEST(test_reject_depth),
    RL_TEST(test_reject_utf8),
    RL_TEST(test_reject_bigint),
    RL_TEST(test_reject_str_limit),
    RL_TEST(test_reject_items_and_arrays),
    RL_TEST(test_meta_mutations),
    RL_TEST(test_meta_random),
    RL_TEST(test_utf8),
    RL_TEST(test_checksum_header_field),
};

void run_frame_tests(void) { RL_RUN_SUITE(frame_tests); }
