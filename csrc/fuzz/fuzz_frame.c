/*
 * fuzz_frame.c -- libFuzzer target for the frame decoder (rl_frame.c).
 *
 * FUZZ_SOURCES: rl_frame.c rl_crc.c
 * FUZZ_FLAGS: -max_len=16384
 *
 * (The two lines above are read by .ci/fuzz.sh: the csrc/ files to link, and
 * extra libFuzzer flags. Seeds: csrc/fuzz/corpus/frame/, made by
 * csrc/fuzz/make_corpus.py. Crash inputs: csrc/fuzz/regressions/frame/.)
 *
 * The input is one whole frame, as a receiver gets it off the wire:
 *
 *   1. rl_header_decode on its first 48 bytes, under three limits
 *      (UINT64_MAX, the default 1 GiB, and 4 KiB); the results must be
 *      consistent, an accepted header must re-encode to the same 48 bytes, and
 *      its frame size must be computable without overflow.
 *   2. If the declared frame size fits the input (trailing bytes are ignored),
 *      the body checksum: CRC32C of bytes 48.. computed by the hardware path,
 *      the software path, in two pieces split at a fuzzer-chosen point, and by
 *      the bit-at-a-time reference of PROTOCOL.md 4.4 -- all must agree -- and
 *      compared with the header's crc when CHECKSUM is set, as a receiver does;
 *      for checksummed frames also the body tiled past 24 KiB (hardware vs
 *      software), to reach the long-block path that -max_len inputs cannot.
 *   3. rl_meta_validate of the meta with the default limits, with small fixed
 *      limits, and with limits taken from the header's `ack` field (not
 *      checked by the codec for data frames, so free for the fuzzer to pick).
 *      An input accepted under smaller limits must be accepted under the
 *      default ones; a rejection must come with a reason.
 *   4. Every meta that validates is walked with rl_reader exactly as the
 *      Python consumer (rlink/_core.pyx, _Reader.value) walks it: every item,
 *      every dict key, every string's bytes, every scalar's itemsize bytes,
 *      and every array's whole byte range in the data section. A validated
 *      meta must never fail to read, must end exactly at meta_len, and its
 *      arrays must satisfy PROTOCOL.md 6.3 (aligned, in order, inside data).
 *
 * The meta and the data section are each copied into a heap block of exactly
 * their length, so AddressSanitizer reports any read past either (a read of
 * the meta running into the padding would otherwise go unnoticed). A broken
 * invariant calls __builtin_trap(), which libFuzzer reports as a crash.
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

/* Sink for bytes we read only so that ASan checks the read. */
static volatile uint32_t fz_sink;

/* ------------------------------------------------------------------------ */
/* reference implementations (independent of rl_frame.c)                     */
/* ------------------------------------------------------------------------ */
/* PROTOCOL.md 4.4, bit at a time. */
static uint32_t ref_crc32c(const uint8_t *p, size_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ ((crc & 1u) ? 0x82F63B78u : 0u);
    }
    return crc ^ 0xFFFFFFFFu;
}

/* Well-formed UTF-8 by the byte ranges of Unicode Table 3-7 (what Python's
 * decoder accepts), a different algorithm from rl_utf8_valid's. */
static int ref_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint8_t lo = 0x80, hi = 0xBF;  /* range of the second byte */
        if (c <= 0x7F) { i++; continue; }
        else if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c == 0xE0) { len = 3; lo = 0xA0; }
        else if (c >= 0xE1 && c <= 0xEC) len = 3;
        else if (c == 0xED) { len = 3; hi = 0x9F; }
        else if (c >= 0xEE && c <= 0xEF) len = 3;
        else if (c == 0xF0) { len = 4; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) len = 4;
        else if (c == 0xF4) { len = 4; hi = 0x8F; }
        else return 0;
        if (n - i < len) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += len;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* 1. header                                                                  */
/* ------------------------------------------------------------------------ */
static int is_code(int rc) { return rc == RL_OK || rc == RL_EPROTO || rc == RL_ELIMIT; }

/* Frame size from the fields, by PROTOCOL.md 4.1; 0 if it overflows. */
static uint64_t ref_frame_size(const rl_header *h) {
    uint64_t end = (uint64_t)RL_HEADER_SIZE + h->meta_len, total;
    if (h->data_len == 0) return end;
    end = (end + RL_ALIGN - 1) / RL_ALIGN * RL_ALIGN;
    if (__builtin_add_overflow(end, h->data_len, &total)) return 0;
    return total;
}

static void check_accepted_header(const uint8_t *in, const rl_header *h, uint64_t limit) {
    uint8_t out[RL_HEADER_SIZE];
    uint64_t size = ref_frame_size(h);
    FZ_CHECK(size != 0);                      /* no overflow whatever the limit */
    FZ_CHECK(rl_frame_size(h) == size);
    FZ_CHECK(size <= limit);
    FZ_CHECK(h->kind >= 1 && h->kind <= RL_KIND_MAX);
    FZ_CHECK((h->flags & ~(RL_FLAG_REDELIVERED | RL_FLAG_CHECKSUM)) == 0);
    if (h->kind >= RL_KIND_ACK) FZ_CHECK(h->meta_len == 0 && h->data_len == 0);
    size_t pad = rl_frame_pad(h);
    FZ_CHECK(pad < RL_ALIGN);
    FZ_CHECK(h->data_len != 0 || pad == 0);
    FZ_CHECK(rl_frame_data_offset(h) % RL_ALIGN == 0);
    if (h->data_len) FZ_CHECK(rl_frame_data_offset(h) == (size_t)RL_HEADER_SIZE + h->meta_len + pad);
    /* decode then encode is the identity on accepted headers */
    rl_header_encode(h, out);
    FZ_CHECK(memcmp(out, in, RL_HEADER_SIZE) == 0);
}

/* Returns 1 with *h filled if the header is accepted under UINT64_MAX. */
static int fuzz_header(const uint8_t *hdr, rl_header *h) {
    rl_header hd, hs;
    int r_max = rl_header_decode(hdr, UINT64_MAX, h);
    int r_def = rl_header_decode(hdr, (uint64_t)1 << 30, &hd);
    int r_small = rl_header_decode(hdr, 4096, &hs);
    FZ_CHECK(is_code(r_max) && is_code(r_def) && is_code(r_small));
    /* a smaller limit only ever rejects more */
    if (r_small == RL_OK) FZ_CHECK(r_def == RL_OK);
    if (r_def == RL_OK) FZ_CHECK(r_max == RL_OK);
    /* the field rules (1-4) come before the size rules (5-6), so a header
     * rejected as malformed under no limit is never accepted under one */
    if (r_max == RL_EPROTO) FZ_CHECK(r_def != RL_OK && r_small != RL_OK);
    if (r_max == RL_OK) check_accepted_header(hdr, h, UINT64_MAX);
    if (r_def == RL_OK) check_accepted_header(hdr, &hd, (uint64_t)1 << 30);
    if (r_small == RL_OK) check_accepted_header(hdr, &hs, 4096);
    return r_max == RL_OK;
}

/* ------------------------------------------------------------------------ */
/* 2. checksum                                                                */
/* ------------------------------------------------------------------------ */
/* The CRC32C of p at every implementation level (rl_crc.h), plain and fused
 * with a copy; all must agree. Returns it. */
static uint32_t all_levels_crc32c(const uint8_t *p, size_t n) {
    rl_crc32c_force_level = 0;
    uint32_t want = rl_crc32c(0, p, n);
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) abort();
    for (int level = 0; level <= 2; level++) {
        rl_crc32c_force_level = level;
        FZ_CHECK(rl_crc32c(0, p, n) == want);
        FZ_CHECK(rl_crc32c_copy(0, copy, p, n) == want);
        FZ_CHECK(memcmp(copy, p, n) == 0);
    }
    rl_crc32c_force_level = 0;
    free(copy);
    return want;
}

/* Returns what a receiver decides: 1 = the body checksum passes (or none). */
static int fuzz_checksum(const rl_header *h, const uint8_t *body, size_t n) {
    uint32_t hw = all_levels_crc32c(body, n);
    /* continuing the register across pieces (PROTOCOL.md 4.4, "Order") */
    size_t k = n ? (size_t)(h->seq % (n + 1)) : 0;
    FZ_CHECK(rl_crc32c(rl_crc32c(0, body, k), body + k, n - k) == hw);
    if (n <= 4096) FZ_CHECK(ref_crc32c(body, n) == hw);
    if (n == 0) FZ_CHECK(hw == 0);
    if (h->flags & RL_FLAG_CHECKSUM) return hw == h->crc;
    return 1;
}

/* Bodies above 3 x 8 KiB take crc_hw's three-stream long-block path (the one
 * every large PARAMS frame takes), which inputs under -max_len never reach:
 * for checksummed frames, also checksum the body tiled up to 24-40 KiB, from a
 * start misaligned by 0-7 bytes, both ways. */
static void fuzz_checksum_long(const rl_header *h, const uint8_t *body, size_t n) {
    size_t skew = (size_t)(h->seq >> 16) & 7;
    size_t len = 3 * 8192 + (size_t)(h->seq % 16384);
    uint8_t *buf = malloc(skew + len);
    if (!buf) abort();
    for (size_t i = 0; i < len; i++) buf[skew + i] = n ? body[i % n] : (uint8_t)i;
    all_levels_crc32c(buf + skew, len);
    free(buf);
}

/* ------------------------------------------------------------------------ */
/* 3-4. meta                                                                  */
/* ------------------------------------------------------------------------ */
typedef struct walk {
    rl_reader r;
    const uint8_t *data;     /* the data section, exactly data_len bytes */
    uint64_t data_len;
    uint64_t prev_end;       /* end of the previous array */
    uint32_t arrays, items;
    const rl_limits *lim;
} walk;

static void touch(const uint8_t *p, uint64_t n) {
    uint32_t acc = 0;
    for (uint64_t i = 0; i < n; i++) acc += p[i];
    fz_sink = acc;
}

static void walk_array(walk *w, const rl_item *it) {
    size_t isz = rl_dtype_size(it->u.array.dtype);
    uint64_t span = isz, nbytes;
    int empty = 0, overflow = 0;
    FZ_CHECK(isz != 0);
    FZ_CHECK(it->u.array.ndim <= RL_MAX_NDIM && it->u.array.ndim <= w->lim->max_ndim);
    FZ_CHECK((it->u.array.aflags & ~RL_AF_FORTRAN) == 0);
    for (unsigned i = 0; i < it->u.array.ndim; i++) {
        uint64_t d = it->u.array.shape[i];
        /* what the consumer hands numpy: npy_intp dims, never negative */
        FZ_CHECK((int64_t)d >= 0);
        if (d == 0) { empty = 1; continue; }
        overflow |= __builtin_mul_overflow(span, d, &span);
    }
    FZ_CHECK(!overflow && span <= (uint64_t)INT64_MAX);
    nbytes = empty ? 0 : span;
    FZ_CHECK(it->u.array.nbytes == nbytes);
    FZ_CHECK(it->u.array.offset % RL_ALIGN == 0);
    FZ_CHECK(it->u.array.offset >= w->prev_end);
    FZ_CHECK(it->u.array.offset <= w->data_len && nbytes <= w->data_len - it->u.array.offset);
    w->prev_end = it->u.array.offset + nbytes;
    if (nbytes) {
        FZ_CHECK(w->data != NULL);
        touch(w->data + it->u.array.offset, nbytes);
    }
    w->arrays++;
}

static void walk_value(walk *w, unsigned depth) {
    rl_item it;
    uint64_t tmp[2];
    FZ_CHECK(depth <= RL_MAX_DEPTH);
    FZ_CHECK(rl_read_item(&w->r, &it) == RL_OK);    /* validated: must read */
    w->items++;
    switch (it.tag) {
    case RL_T_NONE: case RL_T_FALSE: case RL_T_TRUE:
        break;
    case RL_T_INT:
        fz_sink = (uint32_t)it.u.i;
        break;
    case RL_T_FLOAT:
        fz_sink = (uint32_t)(it.u.f == it.u.f);
        break;
    case RL_T_STR:
        touch(it.u.s.p, it.u.s.n);
        FZ_CHECK(ref_utf8_valid(it.u.s.p, it.u.s.n));
        break;
    case RL_T_BYTES:
        touch(it.u.s.p, it.u.s.n);
        break;
    case RL_T_BIGINT:
        FZ_CHECK(it.u.s.n >= 9);
        touch(it.u.s.p, it.u.s.n);
        break;
    case RL_T_SCALAR: {
        size_t sz = rl_dtype_size(it.u.scalar.dtype);
        FZ_CHECK(sz != 0 && sz <= sizeof tmp);
        memcpy(tmp, it.u.scalar.p, sz);              /* as _Reader.value does */
        fz_sink = (uint32_t)tmp[0];
        break;
    }
    case RL_T_ARRAY:
        walk_array(w, &it);
        break;
    case RL_T_LIST: case RL_T_TUPLE:
        FZ_CHECK(depth + 1 <= w->lim->max_depth);
        for (uint32_t i = 0; i < it.u.count; i++) walk_value(w, depth + 1);
        break;
    case RL_T_DICT:
        FZ_CHECK(depth + 1 <= w->lim->max_depth);
        for (uint32_t i = 0; i < it.u.count; i++) {
            const uint8_t *k;
            uint32_t kn;
            FZ_CHECK(rl_read_key(&w->r, &k, &kn) == RL_OK);
            FZ_CHECK(kn <= w->lim->max_str_bytes);
            touch(k, kn);
            FZ_CHECK(ref_utf8_valid(k, kn));
            walk_value(w, depth + 1);
        }
        break;
    default:
        __builtin_trap();   /* the validator let an unknown tag through */
    }
}

/* Validate, and walk what validates. Returns the validator's code. */
static int fuzz_meta(const uint8_t *meta, uint32_t meta_len, const uint8_t *data,
                     uint64_t data_len, const rl_limits *lim, unsigned *root) {
    const char *why = NULL;
    *root = 0xFFFF;
    int rc = rl_meta_validate(meta, meta_len, data_len, lim, root, &why);
    FZ_CHECK(is_code(rc));
    if (rc != RL_OK) {
        FZ_CHECK(why != NULL && why[0] != '\0');
        return rc;
    }
    FZ_CHECK(meta_len >= 1 && *root <= RL_T_SCALAR);
    walk w;
    memset(&w, 0, sizeof w);
    rl_reader_init(&w.r, meta, meta_len, data_len, lim);
    w.data = data;
    w.data_len = data_len;
    w.lim = lim;
    walk_value(&w, 0);
    FZ_CHECK(w.r.p == w.r.end);                      /* exactly one root value */
    FZ_CHECK(w.items <= lim->max_items && w.arrays <= lim->max_arrays);
    return rc;
}

/* Limits from the 8 bytes of `ack`: each field small enough to be hit. */
static void limits_from(uint64_t v, rl_limits *l) {
    l->max_message_bytes = (uint64_t)1 << 30;
    l->max_arrays = (uint32_t)(v & 0xFF);
    l->max_ndim = (uint32_t)((v >> 8) & 0x3F);       /* 0..63: above 32 too */
    l->max_depth = (uint32_t)((v >> 16) & 0x1FF);    /* 0..511: above 256 too */
    l->max_items = (uint32_t)((v >> 32) & 0xFFFF);
    l->max_str_bytes = (uint32_t)((v >> 48) & 0xFFFF);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    rl_header h;
    if (size < RL_HEADER_SIZE) return 0;
    uint8_t *hdr = fz_dup(data, RL_HEADER_SIZE);
    int ok = fuzz_header(hdr, &h);
    free(hdr);
    if (!ok || rl_frame_size(&h) > size) return 0;

    /* the frame as a receiver holds it: exactly frame_size bytes */
    size_t fsize = (size_t)rl_frame_size(&h);
    uint8_t *frame = fz_dup(data, fsize);
    (void)fuzz_checksum(&h, frame + RL_HEADER_SIZE, fsize - RL_HEADER_SIZE);
    if (h.flags & RL_FLAG_CHECKSUM) fuzz_checksum_long(&h, frame + RL_HEADER_SIZE, fsize - RL_HEADER_SIZE);

    /* UTF-8 validator against the reference, on whatever the body holds */
    FZ_CHECK(rl_utf8_valid(frame + RL_HEADER_SIZE, h.meta_len) ==
             ref_utf8_valid(frame + RL_HEADER_SIZE, h.meta_len));

    uint8_t *meta = fz_dup(frame + RL_HEADER_SIZE, h.meta_len);
    uint8_t *dsec = h.data_len ? fz_dup(frame + rl_frame_data_offset(&h), (size_t)h.data_len) : NULL;

    rl_limits def, small, fuzzed;
    unsigned root_def, root_small, root_fuzzed;
    rl_limits_default(&def);
    small = def;
    small.max_arrays = 4;
    small.max_ndim = 3;
    small.max_depth = 4;
    small.max_items = 32;
    small.max_str_bytes = 16;
    int r_def = fuzz_meta(meta, h.meta_len, dsec, h.data_len, &def, &root_def);
    int r_small = fuzz_meta(meta, h.meta_len, dsec, h.data_len, &small, &root_small);
    if (r_small == RL_OK) FZ_CHECK(r_def == RL_OK && root_def == root_small);
    if (h.ack != 0) {
        limits_from(h.ack, &fuzzed);
        int r_f = fuzz_meta(meta, h.meta_len, dsec, h.data_len, &fuzzed, &root_fuzzed);
        /* fuzzed limits never exceed the hard caps, so within the defaults'
         * reach except for depth (capped at 256 vs 64) and str (<= 64 KiB) */
        if (r_f == RL_OK && fuzzed.max_depth <= def.max_depth) FZ_CHECK(r_def == RL_OK);
    }

    free(dsec);
    free(meta);
    free(frame);
    return 0;
}
