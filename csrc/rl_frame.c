/* rl_frame.c -- wire format codec. See rl_frame.h and PROTOCOL.md. */
#include "rl_frame.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* little-endian helpers (memcpy keeps them alignment-safe)                  */
/* ------------------------------------------------------------------------ */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "rlink currently supports little-endian hosts only"
#endif

static inline void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

const char *rl_strerror(int code) {
    switch (code) {
    case RL_OK: return "ok";
    case RL_EAGAIN: return "would block";
    case RL_EPROTO: return "protocol violation";
    case RL_ELIMIT: return "limit exceeded";
    case RL_ENOMEM: return "out of memory";
    case RL_ETIMEDOUT: return "timed out";
    case RL_ECLOSED: return "node closed";
    case RL_ECONNLOST: return "connection lost";
    case RL_ENOCONN: return "no such peer";
    case RL_EVERSION: return "incompatible protocol version";
    case RL_EADDRINUSE: return "address in use";
    case RL_ECONNREFUSED: return "connection refused";
    case RL_EINVAL: return "invalid argument";
    case RL_ESYS: return "system error";
    case RL_ETOOBIG: return "message too large";
    case RL_EAUTH: return "authentication failed";
    default: return "unknown error";
    }
}

/* ------------------------------------------------------------------------ */
/* hello                                                                      */
/* ------------------------------------------------------------------------ */
void rl_hello_encode(const rl_hello *h, uint8_t out[RL_HELLO_SIZE]) {
    memset(out, 0, RL_HELLO_SIZE);
    memcpy(out, RL_MAGIC, 4);
    put16(out + 4, h->version);
    out[6] = h->role;
    out[7] = h->flags;
    put64(out + 8, h->node_id);
    put64(out + 16, h->resume_seq);
    put32(out + 24, h->max_message);
    put32(out + 28, h->retry_attempts);
}

int rl_hello_decode(const uint8_t in[RL_HELLO_SIZE], rl_hello *h) {
    if (memcmp(in, RL_MAGIC, 4) != 0) return RL_EPROTO;
    h->version = get16(in + 4);
    h->role = in[6];
    h->flags = in[7];
    h->node_id = get64(in + 8);
    h->resume_seq = get64(in + 16);
    h->max_message = get32(in + 24);
    h->retry_attempts = get32(in + 28);
    if (h->version != RL_PROTOCOL_VERSION) return RL_EVERSION;
    if (h->role != RL_ROLE_ACTOR && h->role != RL_ROLE_LEARNER) return RL_EPROTO;
    if (h->flags & ~(RL_HELLO_RELIABLE | RL_HELLO_AUTH)) return RL_EPROTO;
    if (h->node_id == 0) return RL_EPROTO;
    return RL_OK;
}

/* ------------------------------------------------------------------------ */
/* header                                                                     */
/* ------------------------------------------------------------------------ */
void rl_header_encode(const rl_header *h, uint8_t out[RL_HEADER_SIZE]) {
    out[0] = h->kind;
    out[1] = h->flags;
    put16(out + 2, 0);
    put32(out + 4, h->meta_len);
    put64(out + 8, h->data_len);
    put64(out + 16, h->seq);
    put64(out + 24, h->ack);
    put64(out + 32, h->ref);
    put32(out + 40, h->crc);
    /* the header's own checksum: lets a receiver distrust a corrupted
     * length before it waits for (or allocates) a body */
    put32(out + 44, (h->flags & RL_FLAG_CHECKSUM) ? rl_crc32c(0, out, RL_HEADER_HCRC_OFFSET) : 0);
}

size_t rl_frame_data_offset(const rl_header *h) {
    size_t end = RL_HEADER_SIZE + (size_t)h->meta_len;
    return (end + RL_ALIGN - 1) & ~(size_t)(RL_ALIGN - 1);
}

size_t rl_frame_pad(const rl_header *h) {
    if (h->data_len == 0) return 0;
    return rl_frame_data_offset(h) - (RL_HEADER_SIZE + (size_t)h->meta_len);
}

uint64_t rl_frame_size(const rl_header *h) {
    return (uint64_t)RL_HEADER_SIZE + h->meta_len + rl_frame_pad(h) + h->data_len;
}

int rl_header_decode(const uint8_t in[RL_HEADER_SIZE], uint64_t max_message_bytes,
                     rl_header *h) {
    h->kind = in[0];
    h->flags = in[1];
    h->meta_len = get32(in + 4);
    h->data_len = get64(in + 8);
    h->seq = get64(in + 16);
    h->ack = get64(in + 24);
    h->ref = get64(in + 32);
    h->crc = get32(in + 40);
    if (h->flags & RL_FLAG_CHECKSUM) {
        if (get32(in + 44) != rl_crc32c(0, in, RL_HEADER_HCRC_OFFSET)) return RL_EPROTO;
    } else if (h->crc != 0 || get32(in + 44) != 0) {
        return RL_EPROTO;
    }
    if (h->kind == 0 || h->kind > RL_KIND_MAX) return RL_EPROTO;
    if (h->flags & ~(RL_FLAG_REDELIVERED | RL_FLAG_CHECKSUM)) return RL_EPROTO;
    if (get16(in + 2) != 0) return RL_EPROTO;
    /* meta_len < 2^32, so header + meta + pad < 2^32 + 112; bounding data_len
     * below keeps the sum in rl_frame_size from wrapping even when the
     * caller's limit is close to UINT64_MAX. */
    if (h->data_len > max_message_bytes) return RL_ELIMIT;
    if (h->data_len > UINT64_MAX - ((uint64_t)RL_HEADER_SIZE + UINT32_MAX + RL_ALIGN))
        return RL_ELIMIT;
    if (rl_frame_size(h) > max_message_bytes) return RL_ELIMIT;
    if ((h->kind == RL_KIND_BYE || h->kind == RL_KIND_ACK || h->kind == RL_KIND_HEARTBEAT) &&
        (h->meta_len != 0 || h->data_len != 0))
        return RL_EPROTO;
    return RL_OK;
}

/* ------------------------------------------------------------------------ */
/* limits and dtypes                                                          */
/* ------------------------------------------------------------------------ */
void rl_limits_default(rl_limits *l) {
    l->max_message_bytes = (uint64_t)1 << 30;  /* 1 GiB */
    l->max_arrays = 1u << 16;
    l->max_ndim = RL_MAX_NDIM;
    l->max_depth = 64;
    l->max_items = 1u << 20;
    l->max_str_bytes = 1u << 26;                /* 64 MiB */
}

size_t rl_dtype_size(unsigned dtype) {
    static const unsigned char sizes[RL_DT_MAX + 1] = {
        0, 1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8, 8, 16};
    return dtype <= RL_DT_MAX ? sizes[dtype] : 0;
}

/* ------------------------------------------------------------------------ */
/* writer                                                                     */
/* ------------------------------------------------------------------------ */
void rl_writer_init(rl_writer *w) { memset(w, 0, sizeof *w); }
void rl_writer_reset(rl_writer *w) { w->len = 0; w->data_len = 0; w->failed = 0; }
void rl_writer_free(rl_writer *w) { free(w->buf); rl_writer_init(w); }

static uint8_t *wreserve(rl_writer *w, size_t n) {
    if (w->failed) return NULL;
    if (n > SIZE_MAX - w->len) { w->failed = RL_ENOMEM; return NULL; }
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n) {
            if (cap > SIZE_MAX / 2) { w->failed = RL_ENOMEM; return NULL; }
            cap *= 2;
        }
        uint8_t *b = realloc(w->buf, cap);
        if (!b) { w->failed = RL_ENOMEM; return NULL; }
        w->buf = b;
        w->cap = cap;
    }
    uint8_t *p = w->buf + w->len;
    w->len += n;
    return p;
}

void rl_write_none(rl_writer *w) { uint8_t *p = wreserve(w, 1); if (p) p[0] = RL_T_NONE; }
void rl_write_bool(rl_writer *w, int v) {
    uint8_t *p = wreserve(w, 1);
    if (p) p[0] = v ? RL_T_TRUE : RL_T_FALSE;
}
void rl_write_int(rl_writer *w, int64_t v) {
    uint8_t *p = wreserve(w, 9);
    if (p) { p[0] = RL_T_INT; put64(p + 1, (uint64_t)v); }
}
void rl_write_float(rl_writer *w, double v) {
    uint8_t *p = wreserve(w, 9);
    if (p) { p[0] = RL_T_FLOAT; memcpy(p + 1, &v, 8); }
}
static void write_blob(rl_writer *w, unsigned tag, const void *s, uint32_t n) {
    uint8_t *p = wreserve(w, 5 + (size_t)n);
    if (!p) return;
    p[0] = (uint8_t)tag;
    put32(p + 1, n);
    if (n) memcpy(p + 5, s, n);
}
void rl_write_bigint(rl_writer *w, const uint8_t *b, uint32_t n) { write_blob(w, RL_T_BIGINT, b, n); }
void rl_write_str(rl_writer *w, const char *s, uint32_t n) { write_blob(w, RL_T_STR, s, n); }
void rl_write_bytes(rl_writer *w, const void *s, uint32_t n) { write_blob(w, RL_T_BYTES, s, n); }
void rl_write_key(rl_writer *w, const char *s, uint32_t n) {
    uint8_t *p = wreserve(w, 4 + (size_t)n);
    if (!p) return;
    put32(p, n);
    if (n) memcpy(p + 4, s, n);
}
void rl_write_container(rl_writer *w, unsigned tag, uint32_t count) {
    uint8_t *p = wreserve(w, 5);
    if (p) { p[0] = (uint8_t)tag; put32(p + 1, count); }
}
void rl_write_scalar(rl_writer *w, unsigned dtype, const void *value) {
    size_t sz = rl_dtype_size(dtype);
    uint8_t *p = wreserve(w, 2 + sz);
    if (p) { p[0] = RL_T_SCALAR; p[1] = (uint8_t)dtype; memcpy(p + 2, value, sz); }
}
uint64_t rl_write_array(rl_writer *w, unsigned dtype, unsigned ndim,
                        const uint64_t *shape, unsigned aflags, uint64_t nbytes) {
    uint8_t *p = wreserve(w, 4 + 8 * (size_t)ndim + 8);
    uint64_t off = (w->data_len + RL_ALIGN - 1) & ~(uint64_t)(RL_ALIGN - 1);
    if (!p) return off;
    p[0] = RL_T_ARRAY;
    p[1] = (uint8_t)dtype;
    p[2] = (uint8_t)ndim;
    p[3] = (uint8_t)aflags;
    uint8_t *q = p + 4;
    for (unsigned i = 0; i < ndim; i++) put64(q + 8 * i, shape[i]);
    put64(q + 8 * ndim, off);
    w->data_len = off + nbytes;
    return off;
}

/* ------------------------------------------------------------------------ */
/* reader                                                                     */
/* ------------------------------------------------------------------------ */
void rl_reader_init(rl_reader *r, const uint8_t *meta, size_t meta_len,
                    uint64_t data_len, const rl_limits *limits) {
    r->p = meta;
    r->end = meta + meta_len;
    r->data_len = data_len;
    r->data_end = 0;
    r->limits = limits;
    r->arrays = 0;
    r->items = 0;
    r->why = NULL;
}

#define FAIL(code, reason) do { r->why = (reason); return (code); } while (0)
#define NEED(n) do { if ((size_t)(r->end - r->p) < (size_t)(n)) \
    FAIL(RL_EPROTO, "a length or count points past the end of the meta"); } while (0)

static int read_blob(rl_reader *r, const uint8_t **p, uint32_t *n) {
    NEED(4);
    uint32_t len = get32(r->p);
    if (len > r->limits->max_str_bytes) FAIL(RL_ELIMIT, "a str, bytes, int or key is longer than max_str_bytes");
    r->p += 4;
    NEED(len);
    *p = r->p;
    *n = len;
    r->p += len;
    return RL_OK;
}

int rl_read_key(rl_reader *r, const uint8_t **p, uint32_t *n) { return read_blob(r, p, n); }

int rl_read_item(rl_reader *r, rl_item *it) {
    NEED(1);
    if (++r->items > r->limits->max_items) FAIL(RL_ELIMIT, "more values in one message than max_items");
    unsigned tag = *r->p++;
    it->tag = tag;
    switch (tag) {
    case RL_T_NONE: case RL_T_FALSE: case RL_T_TRUE:
        return RL_OK;
    case RL_T_INT:
        NEED(8); it->u.i = (int64_t)get64(r->p); r->p += 8; return RL_OK;
    case RL_T_FLOAT:
        NEED(8); memcpy(&it->u.f, r->p, 8); r->p += 8; return RL_OK;
    case RL_T_STR: case RL_T_BYTES: case RL_T_BIGINT: {
        int rc = read_blob(r, &it->u.s.p, &it->u.s.n);
        if (rc) return rc;
        if (tag == RL_T_BIGINT && it->u.s.n < 9) FAIL(RL_EPROTO, "BIGINT shorter than 9 bytes");
        return RL_OK;
    }
    case RL_T_LIST: case RL_T_TUPLE: case RL_T_DICT:
        NEED(4);
        it->u.count = get32(r->p);
        r->p += 4;
        /* each element takes at least one byte (a key at least four) */
        if (it->u.count > r->limits->max_items) FAIL(RL_ELIMIT, "a container holds more than max_items values");
        if ((size_t)(r->end - r->p) < (size_t)it->u.count * (tag == RL_T_DICT ? 5u : 1u))
            FAIL(RL_EPROTO, "a container's count is larger than the rest of the meta can hold");
        return RL_OK;
    case RL_T_SCALAR: {
        NEED(1);
        unsigned dt = *r->p++;
        size_t sz = rl_dtype_size(dt);
        if (!sz) FAIL(RL_EPROTO, "unknown dtype code in a scalar");
        NEED(sz);
        it->u.scalar.dtype = dt;
        it->u.scalar.p = r->p;
        r->p += sz;
        return RL_OK;
    }
    case RL_T_ARRAY: {
        NEED(3);
        unsigned dt = r->p[0], ndim = r->p[1], af = r->p[2];
        r->p += 3;
        size_t isz = rl_dtype_size(dt);
        if (!isz) FAIL(RL_EPROTO, "unknown dtype code in an array");
        if (af & ~RL_AF_FORTRAN) FAIL(RL_EPROTO, "array flags have reserved bits set");
        if (ndim > r->limits->max_ndim || ndim > RL_MAX_NDIM)
            FAIL(RL_ELIMIT, "array has more dimensions than max_ndim");
        if (++r->arrays > r->limits->max_arrays) FAIL(RL_ELIMIT, "more arrays in one message than max_arrays");
        NEED(8 * (size_t)ndim + 8);
        /* numpy sizes are signed (npy_intp): the product of the non-zero
         * dimensions times the item size must stay below 2^63, even when
         * another dimension is 0 and the array holds no bytes. */
        uint64_t span = isz;
        int empty = 0;
        for (unsigned i = 0; i < ndim; i++) {
            uint64_t d = get64(r->p + 8 * i);
            it->u.array.shape[i] = d;
            if (d == 0) { empty = 1; continue; }
            if (span > (uint64_t)INT64_MAX / d)
                FAIL(RL_EPROTO, "array shape overflows (item size times dimensions reaches 2^63)");
            span *= d;
        }
        uint64_t nbytes = empty ? 0 : span;
        uint64_t off = get64(r->p + 8 * ndim);
        r->p += 8 * (size_t)ndim + 8;
        if (off % RL_ALIGN) FAIL(RL_EPROTO, "array offset is not a multiple of 64");
        if (off < r->data_end) FAIL(RL_EPROTO, "arrays overlap or are out of order in the data section");
        if (off > r->data_len || nbytes > r->data_len - off)
            FAIL(RL_EPROTO, "array lies outside the data section");
        r->data_end = off + nbytes;
        it->u.array.dtype = dt;
        it->u.array.ndim = ndim;
        it->u.array.aflags = af;
        it->u.array.offset = off;
        it->u.array.nbytes = nbytes;
        return RL_OK;
    }
    default:
        FAIL(RL_EPROTO, "unknown value tag");
    }
}

int rl_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return 0;
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000))
            return 0;  /* overlong */
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += len;
    }
    return 1;
}

int rl_meta_validate(const uint8_t *meta, size_t meta_len, uint64_t data_len,
                     const rl_limits *limits, unsigned *root_tag, const char **why) {
    rl_reader r;
    rl_item it;
    /* remaining[d]: values still expected at depth d; is_dict[d]: keys first */
    uint32_t remaining[RL_MAX_DEPTH + 1];
    unsigned char is_dict[RL_MAX_DEPTH + 1];
    unsigned depth = 0, max_depth = limits->max_depth;
    const char *reason = NULL;
    int rc;

    if (max_depth > RL_MAX_DEPTH) max_depth = RL_MAX_DEPTH;
    rl_reader_init(&r, meta, meta_len, data_len, limits);
    remaining[0] = 1;
    is_dict[0] = 0;
    for (;;) {
        while (depth > 0 && remaining[depth] == 0) depth--;
        if (remaining[depth] == 0) break;       /* depth 0 done: root read */
        remaining[depth]--;
        if (is_dict[depth]) {
            const uint8_t *k;
            uint32_t kn;
            if ((rc = rl_read_key(&r, &k, &kn))) {
                reason = rc == RL_ELIMIT ? "a dict key is longer than max_str_bytes"
                                         : "a dict key's length points past the end of the meta";
                goto fail;
            }
            if (!rl_utf8_valid(k, kn)) { rc = RL_EPROTO; reason = "dict key is not valid UTF-8"; goto fail; }
        }
        if ((rc = rl_read_item(&r, &it))) {
            reason = r.why ? r.why : "malformed value";
            goto fail;
        }
        if (depth == 0 && root_tag) *root_tag = it.tag;
        if (it.tag == RL_T_STR && !rl_utf8_valid(it.u.s.p, it.u.s.n)) {
            rc = RL_EPROTO; reason = "string is not valid UTF-8"; goto fail;
        }
        if (it.tag == RL_T_LIST || it.tag == RL_T_TUPLE || it.tag == RL_T_DICT) {
            if (depth + 1 > max_depth) { rc = RL_ELIMIT; reason = "nested deeper than max_depth"; goto fail; }
            depth++;
            remaining[depth] = it.u.count;
            is_dict[depth] = it.tag == RL_T_DICT;
        }
    }
    if (r.p != r.end) { rc = RL_EPROTO; reason = "trailing bytes after the message"; goto fail; }
    return RL_OK;
fail:
    if (why) *why = reason;
    return rc;
}
