/* rl_ring.c -- the per-connection send ring. See rl_ring.h. */
#include "rl_ring.h"
#include "rl_frame.h"

#include "rl_os.h"
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* frame memory                                                               */
/* ------------------------------------------------------------------------ */
/* Large buffers (>= 64 KiB) are recycled through a small process-wide
 * cache: allocating a fresh multi-MB buffer per message costs an mmap, a
 * page fault per 4 KiB page and an munmap, which measured ~25% of receive
 * time on 1.8 MB trajectories. The cache holds at most FRAME_CACHE_SLOTS
 * buffers and FRAME_CACHE_BYTES in all; a buffer is reused only for a frame
 * of at least half its size. Thread-safe (one mutex). */
#define FRAME_CACHE_MIN (64u * 1024u)
#define FRAME_CACHE_SLOTS 16
#define FRAME_CACHE_BYTES ((size_t)256 << 20)

static rl_mutex frame_cache_mu = RL_MUTEX_INITIALIZER;
static int frame_cache_guarded;   /* rl_fork_guard(&frame_cache_mu) done */
static struct { uint8_t *p; size_t cap; } frame_cache[FRAME_CACHE_SLOTS];
static int frame_cache_n;
static size_t frame_cache_bytes;

/* Take the cache's lock. An I/O thread may hold it when another thread
 * forks: the child must not inherit it locked. */
static void cache_lock(void) { rl_mutex_lock_forksafe(&frame_cache_mu, &frame_cache_guarded); }

/* frame_cache_mu held; keeps the others in the order they were freed */
static void cache_remove(int i) {
    memmove(&frame_cache[i], &frame_cache[i + 1], (size_t)(frame_cache_n - i - 1) * sizeof frame_cache[0]);
    frame_cache_n--;
}

uint8_t *rl_mem_alloc(size_t size, size_t *cap) {
    size_t want = (size + 63) & ~(size_t)63;
    if (want >= FRAME_CACHE_MIN) {
        cache_lock();
        /* the smallest that fits; of equal ones the latest freed, whose
         * bytes are likeliest still in cache */
        int best = -1;
        for (int i = frame_cache_n - 1; i >= 0; i--) {
            size_t c = frame_cache[i].cap;
            if (c >= want && c / 2 <= want && (best < 0 || c < frame_cache[best].cap)) best = i;
        }
        if (best >= 0) {
            uint8_t *p = frame_cache[best].p;
            *cap = frame_cache[best].cap;
            frame_cache_bytes -= *cap;
            cache_remove(best);
            rl_mutex_unlock(&frame_cache_mu);
            return p;
        }
        rl_mutex_unlock(&frame_cache_mu);
    }
    *cap = want;
    return rl_aligned_alloc(64, want ? want : 64);
}

void rl_mem_free(uint8_t *p, size_t cap) {
    if (!p) return;
    if (cap >= FRAME_CACHE_MIN) {
        cache_lock();
        if (frame_cache_n == FRAME_CACHE_SLOTS || frame_cache_bytes + cap > FRAME_CACHE_BYTES) {
            /* evict the smallest to make room for a large one, else drop this */
            int small = -1;
            for (int i = 0; i < frame_cache_n; i++)
                if (small < 0 || frame_cache[i].cap < frame_cache[small].cap) small = i;
            if (small >= 0 && frame_cache[small].cap < cap && cap <= FRAME_CACHE_BYTES) {
                rl_aligned_free(frame_cache[small].p);
                frame_cache_bytes -= frame_cache[small].cap;
                cache_remove(small);
            }
        }
        if (frame_cache_n < FRAME_CACHE_SLOTS && frame_cache_bytes + cap <= FRAME_CACHE_BYTES) {
            frame_cache[frame_cache_n].p = p;
            frame_cache[frame_cache_n].cap = cap;
            frame_cache_n++;
            frame_cache_bytes += cap;
            p = NULL;
        }
        rl_mutex_unlock(&frame_cache_mu);
    }
    rl_aligned_free(p);
}


rl_buf *rl_buf_new(size_t cap) {
    if (cap > SIZE_MAX - 256) return NULL;
    if (cap < FRAME_CACHE_MIN) {
        /* small: one allocation holds the struct and its 64-aligned data */
        size_t head = (sizeof(rl_buf) + 63) & ~(size_t)63;
        size_t total = (head + cap + 63) & ~(size_t)63;
        uint8_t *mem = rl_aligned_alloc(64, total);
        if (!mem) return NULL;
        rl_buf *b = (rl_buf *)mem;
        b->data = mem + head;
        b->alloc = 0;   /* inline */
        b->release = NULL;
        b->refs = 1;
        b->len = 0;
        b->cap = cap;
        return b;
    }
    rl_buf *b = malloc(sizeof *b);
    if (!b) return NULL;
    b->data = rl_mem_alloc(cap, &b->alloc);
    if (!b->data) { free(b); return NULL; }
    b->release = NULL;
    b->refs = 1;
    b->len = 0;
    b->cap = cap;
    return b;
}

rl_buf *rl_buf_wrap(void (*release)(void *ctx), void *ctx) {
    rl_buf *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->release = release;
    b->ctx = ctx;
    b->refs = 1;
    return b;
}

rl_buf *rl_buf_ref(rl_buf *b) {
    rl_atomic_add(&b->refs, 1, RL_RELAXED);
    return b;
}

void rl_buf_unref(rl_buf *b) {
    if (b && rl_atomic_sub(&b->refs, 1, RL_ACQ_REL) == 0) {
        if (b->release) { b->release(b->ctx); free(b); }
        else if (b->alloc) { rl_mem_free(b->data, b->alloc); free(b); }
        else rl_aligned_free(b);   /* inline: b is the aligned block itself */
    }
}

void rl_ring_init(rl_ring *r) { memset(r, 0, sizeof *r); }

void rl_ring_clear(rl_ring *r) {
    for (size_t i = 0; i < r->count; i++) rl_buf_unref(r->segs[(r->head + i) % r->cap].owner);
    r->head = r->count = 0;
    r->bytes = 0;
}

void rl_ring_free(rl_ring *r) {
    rl_ring_clear(r);
    free(r->segs);
    rl_ring_init(r);
}

int rl_ring_reserve(rl_ring *r, size_t k) {
    if (r->count > SIZE_MAX / sizeof(rl_seg) / 4 || k > SIZE_MAX / sizeof(rl_seg) / 4 - r->count)
        return RL_ENOMEM;
    if (r->count + k <= r->cap) return 0;
    size_t cap = r->cap ? r->cap * 2 : 16;
    while (cap < r->count + k) cap *= 2;
    rl_seg *s = malloc(cap * sizeof *s);
    if (!s) return RL_ENOMEM;
    for (size_t i = 0; i < r->count; i++) s[i] = r->segs[(r->head + i) % r->cap];
    free(r->segs);
    r->segs = s;
    r->cap = cap;
    r->head = 0;
    return 0;
}

static int ring_grow(rl_ring *r) { return rl_ring_reserve(r, 1); }

static rl_seg *ring_tail(rl_ring *r) {
    return r->count ? &r->segs[(r->head + r->count - 1) % r->cap] : NULL;
}

int rl_ring_push_ref(rl_ring *r, rl_buf *b, const uint8_t *p, size_t n) {
    rl_seg *t = ring_tail(r);
    if (t && t->owner == b && t->p + t->len == p) {   /* the bytes right after the tail's */
        t->len += n;
        r->bytes += n;
        return 0;
    }
    if (ring_grow(r)) return RL_ENOMEM;
    rl_seg *s = &r->segs[(r->head + r->count) % r->cap];
    s->p = p;
    s->len = n;
    s->owner = rl_buf_ref(b);
    r->count++;
    r->bytes += n;
    return 0;
}

uint8_t *rl_ring_push_room(rl_ring *r, size_t n) {
    if (n == 0) return NULL;
    rl_seg *t = ring_tail(r);
    uint8_t *at;
    /* Coalesce into the tail chunk when it is ours alone and has room. */
    if (t && t->owner && t->p + t->len == t->owner->data + t->owner->len &&
        t->owner->cap - t->owner->len >= n &&
        rl_atomic_load(&t->owner->refs, RL_ACQUIRE) == 1) {
        at = t->owner->data + t->owner->len;
        t->owner->len += n;
        t->len += n;
        r->bytes += n;
        return at;
    }
    rl_buf *b = rl_buf_new(n < RL_RING_CHUNK ? RL_RING_CHUNK : n);
    if (!b) return NULL;
    b->len = n;
    at = rl_ring_push_ref(r, b, b->data, n) == 0 ? b->data : NULL;
    rl_buf_unref(b);   /* the ring holds it, or nobody: freed */
    return at;
}

int rl_ring_push_copy(rl_ring *r, const void *p, size_t n) {
    if (n == 0) return 0;
    uint8_t *at = rl_ring_push_room(r, n);
    if (!at) return RL_ENOMEM;
    memcpy(at, p, n);
    return 0;
}

int rl_ring_peek(const rl_ring *r, void **bases, size_t *lens, int max) {
    int k = 0;
    for (size_t i = 0; i < r->count && k < max; i++, k++) {
        const rl_seg *s = &r->segs[(r->head + i) % r->cap];
        bases[k] = (void *)s->p;
        lens[k] = s->len;
    }
    return k;
}

void rl_ring_consume(rl_ring *r, size_t n) {
    while (n > 0 && r->count > 0) {
        rl_seg *s = &r->segs[r->head];
        if (n < s->len) {
            s->p += n;
            s->len -= n;
            r->bytes -= n;
            return;
        }
        n -= s->len;
        r->bytes -= s->len;
        rl_buf_unref(s->owner);
        r->head = (r->head + 1) % r->cap;
        r->count--;
    }
    if (r->count == 0) r->head = 0;
}
