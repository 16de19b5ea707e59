/* rl_ring.c -- the per-connection send ring. See rl_ring.h. */
#include "rl_ring.h"
#include "rl_frame.h"

#include <stdlib.h>
#include <string.h>

rl_buf *rl_buf_new(size_t cap) {
    rl_buf *b = malloc(sizeof *b);
    if (!b) return NULL;
    size_t alloc = (cap + 63) & ~(size_t)63;
    if (alloc < cap) { free(b); return NULL; }
    b->data = aligned_alloc(64, alloc ? alloc : 64);
    if (!b->data) { free(b); return NULL; }
    b->refs = 1;
    b->len = 0;
    b->cap = cap;
    return b;
}

rl_buf *rl_buf_ref(rl_buf *b) {
    __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
    return b;
}

void rl_buf_unref(rl_buf *b) {
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        free(b->data);
        free(b);
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

static int ring_grow(rl_ring *r) {
    if (r->count < r->cap) return 0;
    size_t cap = r->cap ? r->cap * 2 : 16;
    rl_seg *s = malloc(cap * sizeof *s);
    if (!s) return RL_ENOMEM;
    for (size_t i = 0; i < r->count; i++) s[i] = r->segs[(r->head + i) % r->cap];
    free(r->segs);
    r->segs = s;
    r->cap = cap;
    r->head = 0;
    return 0;
}

static rl_seg *ring_tail(rl_ring *r) {
    return r->count ? &r->segs[(r->head + r->count - 1) % r->cap] : NULL;
}

int rl_ring_push_ref(rl_ring *r, rl_buf *b, const uint8_t *p, size_t n) {
    if (ring_grow(r)) return RL_ENOMEM;
    rl_seg *s = &r->segs[(r->head + r->count) % r->cap];
    s->p = p;
    s->len = n;
    s->owner = rl_buf_ref(b);
    r->count++;
    r->bytes += n;
    return 0;
}

int rl_ring_push_copy(rl_ring *r, const void *p, size_t n) {
    if (n == 0) return 0;
    rl_seg *t = ring_tail(r);
    /* Coalesce into the tail chunk when it is ours alone and has room. */
    if (t && t->owner && t->p + t->len == t->owner->data + t->owner->len &&
        t->owner->cap - t->owner->len >= n &&
        __atomic_load_n(&t->owner->refs, __ATOMIC_ACQUIRE) == 1) {
        memcpy(t->owner->data + t->owner->len, p, n);
        t->owner->len += n;
        t->len += n;
        r->bytes += n;
        return 0;
    }
    rl_buf *b = rl_buf_new(n < RL_RING_CHUNK ? RL_RING_CHUNK : n);
    if (!b) return RL_ENOMEM;
    memcpy(b->data, p, n);
    b->len = n;
    int rc = rl_ring_push_ref(r, b, b->data, n);
    rl_buf_unref(b);
    return rc;
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
