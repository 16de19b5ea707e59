/*
 * rl_ring.h -- the per-connection send ring.
 *
 * A ring of segments waiting to be written to one socket, drained with a
 * single writev of many segments. Small frames are copied into shared 64 KiB
 * chunks so that a burst of them goes out in one syscall; a large frame gets
 * a chunk of its own; a frame shared by several connections (parameter
 * broadcast) is referenced, not copied.
 *
 * Thread safety: none. The owner (rl_node's connection) serialises every
 * call with its send lock. rl_buf reference counts are atomic, so a buffer
 * may be shared by rings owned by different threads.
 */
#ifndef RL_RING_H
#define RL_RING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 64-byte-aligned memory for frames. Large blocks are recycled through a
 * small bounded process-wide cache. *cap receives the usable size, which
 * must be passed back to rl_mem_free. Thread-safe. */
uint8_t *rl_mem_alloc(size_t size, size_t *cap);
void rl_mem_free(uint8_t *p, size_t cap);

/* A reference-counted byte buffer: bytes of its own, or (rl_buf_wrap) a
 * stand-in for memory that somebody else owns. */
typedef struct rl_buf {
    long refs;            /* atomic */
    size_t len, cap;
    size_t alloc;         /* what rl_mem_alloc gave; 0 = data inline after the struct */
    uint8_t *data;        /* 64-byte aligned, owned; NULL for a wrap */
    void (*release)(void *ctx);   /* a wrap: called when the last reference goes */
    void *ctx;
} rl_buf;

rl_buf *rl_buf_new(size_t cap);          /* refs = 1, len = 0; NULL on ENOMEM */
/* A buffer without bytes of its own (data NULL, cap 0), standing for memory
 * the caller owns: segments may refer to that memory with this buffer as
 * their owner. When the last reference goes, release(ctx) is called, on
 * whichever thread dropped it and holding whatever locks that thread holds
 * (an I/O thread, a ring's lock): it must only hand ctx off, never block or
 * call back into rlink. refs = 1; NULL on ENOMEM (release is not called). */
rl_buf *rl_buf_wrap(void (*release)(void *ctx), void *ctx);
rl_buf *rl_buf_ref(rl_buf *b);
void rl_buf_unref(rl_buf *b);             /* frees at zero; NULL is a no-op */

typedef struct rl_seg {
    const uint8_t *p;
    size_t len;
    rl_buf *owner;        /* one reference held by the ring */
} rl_seg;

typedef struct rl_ring {
    rl_seg *segs;
    size_t cap, head, count;   /* circular */
    size_t bytes;              /* bytes queued, all segments */
} rl_ring;

#define RL_RING_CHUNK 65536u

void rl_ring_init(rl_ring *r);
void rl_ring_clear(rl_ring *r);           /* drop every segment */
void rl_ring_free(rl_ring *r);

/* Copy n bytes at p onto the tail, coalescing into the last chunk when it
 * has room. Returns 0 or RL_ENOMEM (then nothing was added). */
int rl_ring_push_copy(rl_ring *r, const void *p, size_t n);
/* Room for n > 0 more bytes at the tail (in the last chunk when it has
 * room, else in a new one), already counted in r->bytes: the caller fills
 * all n before the ring is read. Returns NULL when out of memory (then
 * nothing was added). One frame copied in pieces goes in whole or not at
 * all. */
uint8_t *rl_ring_push_room(rl_ring *r, size_t n);
/* Append a segment referring to [p, p+n) inside b, or in the memory a
 * wrap b stands for (takes a new reference), or extend the tail segment if
 * it refers to b and ends at p. */
int rl_ring_push_ref(rl_ring *r, rl_buf *b, const uint8_t *p, size_t n);
/* Room for k more segments: the next k rl_ring_push_ref calls cannot fail.
 * Returns 0 or RL_ENOMEM (the ring unchanged). */
int rl_ring_reserve(rl_ring *r, size_t k);

/* Fill up to max iovec-like pairs (base, len) with the head segments; returns
 * how many were filled. */
int rl_ring_peek(const rl_ring *r, void **bases, size_t *lens, int max);
/* Remove n bytes from the head (after a successful write of n bytes);
 * n must not exceed r->bytes. */
void rl_ring_consume(rl_ring *r, size_t n);

#ifdef __cplusplus
}
#endif
#endif
