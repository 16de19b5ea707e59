/*
 * rl_frame.h -- the rlink wire format, sans-IO.
 *
 * Everything here is pure computation over caller-provided memory: no
 * sockets, no threads, no global state. Every function is safe to call from
 * any thread as long as the objects it is given are not shared without
 * synchronisation. PROTOCOL.md is the normative description; this header is
 * its implementation.
 *
 * A frame is a fixed 48-byte header, then `meta_len` bytes of meta (the
 * message tree), then, when data_len > 0, zero padding up to a multiple of
 * 64 bytes from the start of the frame, then `data_len` bytes of array data.
 * All integers are little-endian.
 */
#ifndef RL_FRAME_H
#define RL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "rl_crc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- error codes (negative return values across csrc/) ---------------- */
enum {
    RL_OK = 0,
    RL_EAGAIN = -1,       /* need more bytes / would block */
    RL_EPROTO = -2,       /* malformed input: the peer broke the protocol */
    RL_ELIMIT = -3,       /* well-formed input that exceeds a configured limit */
    RL_ENOMEM = -4,
    RL_ETIMEDOUT = -5,
    RL_ECLOSED = -6,      /* the node was closed */
    RL_ECONNLOST = -7,    /* the connection went away */
    RL_ENOCONN = -8,      /* no such peer */
    RL_EVERSION = -9,     /* handshake: incompatible protocol version */
    RL_EADDRINUSE = -10,
    RL_ECONNREFUSED = -11,
    RL_EINVAL = -12,      /* bad argument from the local caller */
    RL_ESYS = -13,        /* other OS error; see errno */
    RL_ETOOBIG = -14,     /* a local message larger than max_message_bytes */
    RL_EAUTH = -15        /* handshake: the shared-secret authentication failed */
};

/* A short static description of an RL_E* code. Never NULL. */
const char *rl_strerror(int code);

/* ---- handshake --------------------------------------------------------- */
#define RL_MAGIC "RLNK"
#define RL_PROTOCOL_VERSION 1u
#define RL_HELLO_SIZE 32u

enum { RL_ROLE_ACTOR = 1, RL_ROLE_LEARNER = 2 };
/* RL_HELLO_AUTH: the sender authenticates with a shared key; an HMAC
 * challenge-response follows the hellos (PROTOCOL.md section 3.5). */
enum { RL_HELLO_RELIABLE = 1u << 0, RL_HELLO_AUTH = 1u << 1 };

typedef struct rl_hello {
    uint16_t version;
    uint8_t role;
    uint8_t flags;          /* RL_HELLO_* */
    uint64_t node_id;       /* random per node, never 0 */
    uint64_t resume_seq;    /* reliable mode: last sequence delivered (0 = none) */
    uint32_t max_message;   /* receiver's max message size in MiB (0 = unknown) */
    uint32_t retry_attempts;
} rl_hello;

/* Write the 32-byte hello into out. */
void rl_hello_encode(const rl_hello *h, uint8_t out[RL_HELLO_SIZE]);
/* Parse a hello. Returns RL_OK, RL_EPROTO (bad magic, bad role, unknown flag bits,
 * node_id 0) or RL_EVERSION (version != RL_PROTOCOL_VERSION; h->version
 * still holds the peer's version so the caller can name it). */
int rl_hello_decode(const uint8_t in[RL_HELLO_SIZE], rl_hello *h);

/* ---- frame header ------------------------------------------------------ */
#define RL_HEADER_SIZE 48u
#define RL_ALIGN 64u

enum {
    RL_KIND_TRAJ = 1,     /* actor -> learner: a trajectory */
    RL_KIND_PARAMS = 2,   /* learner -> actor: parameters, ref = version */
    RL_KIND_REQUEST = 3,  /* actor -> learner: ref = request id */
    RL_KIND_REPLY = 4,    /* learner -> actor: ref = request id */
    RL_KIND_PUSH = 5,     /* learner -> actor: a message for one actor */
    RL_KIND_ACK = 6,      /* reserved for reliable mode: ack = cumulative */
    RL_KIND_HEARTBEAT = 7,/* reserved for liveness */
    RL_KIND_BYE = 8,      /* graceful close, no body */
    RL_KIND_MAX = 8
};

enum {
    RL_FLAG_REDELIVERED = 1u << 0,  /* reliable mode: may have been delivered before */
    RL_FLAG_CHECKSUM = 1u << 1      /* crc holds the frame's CRC32C */
};

typedef struct rl_header {
    uint8_t kind;
    uint8_t flags;
    uint32_t meta_len;
    uint64_t data_len;
    uint64_t seq;   /* reliable mode: per-session sequence number (0 = unsequenced) */
    uint64_t ack;   /* reliable mode: cumulative ack (0 = none) */
    uint64_t ref;   /* request id (REQUEST/REPLY) or version (PARAMS) */
    uint32_t crc;   /* with RL_FLAG_CHECKSUM: CRC32C of the body (meta, padding,
                       data); else 0. The header's own CRC32C (bytes 44..47,
                       over bytes 0..43) is written and checked by
                       rl_header_encode / rl_header_decode. */
} rl_header;

void rl_header_encode(const rl_header *h, uint8_t out[RL_HEADER_SIZE]);
/* Parse and check a header (its checksum when flagged, kind known, reserved
 * bytes zero, sizes within max_message_bytes, no overflow). Returns RL_OK,
 * RL_EPROTO or RL_ELIMIT. */
int rl_header_decode(const uint8_t in[RL_HEADER_SIZE], uint64_t max_message_bytes,
                     rl_header *h);
/* With RL_FLAG_CHECKSUM, header bytes 40..43 hold the body's CRC32C and
 * bytes 44..47 the CRC32C of header bytes 0..43. */
#define RL_HEADER_HCRC_OFFSET 44u

/* Padding between meta and data (0 when data_len == 0). */
size_t rl_frame_pad(const rl_header *h);
/* Offset of the data section from the start of the frame. */
size_t rl_frame_data_offset(const rl_header *h);
/* Total frame size, header included. Callers must have validated h with
 * rl_header_decode (or built it themselves under the same limit). */
uint64_t rl_frame_size(const rl_header *h);

/* ---- limits ------------------------------------------------------------ */
typedef struct rl_limits {
    uint64_t max_message_bytes;  /* whole frame */
    uint32_t max_arrays;         /* arrays per message */
    uint32_t max_ndim;           /* <= RL_MAX_NDIM */
    uint32_t max_depth;          /* container nesting, <= RL_MAX_DEPTH */
    uint32_t max_items;          /* values of every kind per message */
    uint32_t max_str_bytes;      /* one str, bytes or key */
} rl_limits;

#define RL_MAX_NDIM 32u
#define RL_MAX_DEPTH 256u
void rl_limits_default(rl_limits *l);

/* ---- the message tree ("meta") ------------------------------------------ */
enum {
    RL_T_NONE = 0x00,
    RL_T_FALSE = 0x01,
    RL_T_TRUE = 0x02,
    RL_T_INT = 0x03,     /* i64 */
    RL_T_BIGINT = 0x04,  /* u32 n, n bytes two's-complement little-endian, n >= 9 */
    RL_T_FLOAT = 0x05,   /* f64 */
    RL_T_STR = 0x06,     /* u32 n, n bytes UTF-8 */
    RL_T_BYTES = 0x07,   /* u32 n, n bytes */
    RL_T_LIST = 0x08,    /* u32 count, count values */
    RL_T_TUPLE = 0x09,   /* u32 count, count values */
    RL_T_DICT = 0x0A,    /* u32 count, count x (u32 n, n bytes UTF-8 key, value) */
    RL_T_ARRAY = 0x0B,   /* u8 dtype, u8 ndim, u8 aflags, ndim x u64 shape, u64 offset */
    RL_T_SCALAR = 0x0C   /* u8 dtype, itemsize bytes */
};

enum {
    RL_DT_BOOL = 1, RL_DT_INT8, RL_DT_INT16, RL_DT_INT32, RL_DT_INT64,
    RL_DT_UINT8, RL_DT_UINT16, RL_DT_UINT32, RL_DT_UINT64,
    RL_DT_FLOAT16, RL_DT_FLOAT32, RL_DT_FLOAT64,
    RL_DT_COMPLEX64, RL_DT_COMPLEX128,
    RL_DT_MAX = RL_DT_COMPLEX128
};

enum { RL_AF_FORTRAN = 1u << 0 };

/* Item size in bytes of a dtype code, 0 if the code is unknown. */
size_t rl_dtype_size(unsigned dtype);

/* --- writer: builds meta into a growable buffer owned by the writer ------ */
typedef struct rl_writer {
    uint8_t *buf;      /* owned; free with rl_writer_free */
    size_t len, cap;
    uint64_t data_len; /* bytes of array data laid out so far (64-aligned) */
    int failed;        /* sticky RL_ENOMEM */
} rl_writer;

void rl_writer_init(rl_writer *w);
void rl_writer_reset(rl_writer *w);   /* keep the allocation, drop content */
void rl_writer_free(rl_writer *w);
void rl_write_none(rl_writer *w);
void rl_write_bool(rl_writer *w, int v);
void rl_write_int(rl_writer *w, int64_t v);
void rl_write_bigint(rl_writer *w, const uint8_t *le_bytes, uint32_t n);
void rl_write_float(rl_writer *w, double v);
void rl_write_str(rl_writer *w, const char *s, uint32_t n);   /* also keys */
void rl_write_key(rl_writer *w, const char *s, uint32_t n);   /* dict key (no tag) */
void rl_write_bytes(rl_writer *w, const void *p, uint32_t n);
void rl_write_container(rl_writer *w, unsigned tag, uint32_t count);
void rl_write_scalar(rl_writer *w, unsigned dtype, const void *value);
/* Append an array descriptor and reserve nbytes in the data section; returns
 * the array's offset within the data section (a multiple of RL_ALIGN). */
uint64_t rl_write_array(rl_writer *w, unsigned dtype, unsigned ndim,
                        const uint64_t *shape, unsigned aflags, uint64_t nbytes);

/* --- reader: a validating pull parser over one frame's meta ------------ */
typedef struct rl_item {
    unsigned tag;
    union {
        int64_t i;
        double f;
        struct { const uint8_t *p; uint32_t n; } s;   /* STR, BYTES, BIGINT */
        uint32_t count;                                 /* LIST, TUPLE, DICT */
        struct { unsigned dtype; const uint8_t *p; } scalar;
        struct {
            unsigned dtype, ndim, aflags;
            uint64_t shape[RL_MAX_NDIM];
            uint64_t offset, nbytes;
        } array;
    } u;
} rl_item;

typedef struct rl_reader {
    const uint8_t *p, *end;
    uint64_t data_len;
    uint64_t data_end;     /* end of the previous array: arrays must not overlap */
    const rl_limits *limits;
    uint32_t arrays, items;
    const char *why;       /* after a failed read: a static reason naming the rule */
} rl_reader;

void rl_reader_init(rl_reader *r, const uint8_t *meta, size_t meta_len,
                    uint64_t data_len, const rl_limits *limits);
/* Read the next item. Returns RL_OK, or RL_EPROTO / RL_ELIMIT. Does not
 * track nesting; rl_meta_validate does. */
int rl_read_item(rl_reader *r, rl_item *it);
/* Read a dict key (no tag). */
int rl_read_key(rl_reader *r, const uint8_t **p, uint32_t *n);

/* Validate one frame's meta completely: exactly one root value, every
 * container complete, nesting within limits, keys and strings valid UTF-8,
 * arrays inside the data section, 64-aligned, in increasing order and not
 * overlapping, all within limits. If root_tag is not NULL it receives the
 * root value's tag. On error, *why (if not NULL) points to a static reason. */
int rl_meta_validate(const uint8_t *meta, size_t meta_len, uint64_t data_len,
                     const rl_limits *limits, unsigned *root_tag, const char **why);

int rl_utf8_valid(const uint8_t *p, size_t n);

#ifdef __cplusplus
}
#endif
#endif
