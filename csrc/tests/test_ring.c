/* test_ring.c -- the send ring and reference-counted buffers. */
#include "rl_frame.h"
#include "rl_ring.h"
#include "rl_test.h"

#include <stdlib.h>
#include <string.h>

/* Drain the ring through peek/consume in pieces of at most `step` bytes and
 * return everything it held, in order. */
static size_t drain(rl_ring *r, uint8_t *out, size_t cap, size_t step) {
    size_t got = 0;
    void *bases[8];
    size_t lens[8];
    while (r->bytes > 0 && got < cap) {
        int k = rl_ring_peek(r, bases, lens, 8);
        if (!CHECK(k > 0)) break;
        size_t take = 0;
        for (int i = 0; i < k && take < step; i++) {
            size_t n = lens[i];
            if (take + n > step) n = step - take;
            if (got + n > cap) n = cap - got;
            memcpy(out + got, bases[i], n);
            got += n;
            take += n;
            if (n < lens[i]) break;
        }
        rl_ring_consume(r, take);
    }
    return got;
}

static void test_ring_order_and_coalescing(void) {
    rl_ring r;
    rl_ring_init(&r);
    uint8_t src[100000], out[sizeof src];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 7 + 3);
    /* many small pushes coalesce into few chunks */
    size_t off = 0;
    for (int i = 0; i < 500; i++) {
        CHECK_EQ(rl_ring_push_copy(&r, src + off, 100), 0);
        off += 100;
    }
    CHECK_EQU(r.bytes, 50000);
    CHECK(r.count <= 2);
    /* a push larger than a chunk gets its own segment */
    CHECK_EQ(rl_ring_push_copy(&r, src + off, 50000), 0);
    off += 50000;
    CHECK_EQU(r.bytes, off);
    /* drain in odd-sized steps: the bytes come out in order */
    size_t got = drain(&r, out, sizeof out, 777);
    CHECK_EQU(got, off);
    CHECK(memcmp(src, out, off) == 0);
    CHECK_EQU(r.bytes, 0);
    CHECK_EQU(r.count, 0);
    rl_ring_free(&r);
}

static void test_ring_interleaved(void) {
    /* push and consume alternately so the circular index wraps many times */
    rl_ring r;
    rl_ring_init(&r);
    uint8_t in[64], out[64];
    uint8_t next_in = 0, next_out = 0;
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)(round % 63) + 1;
        for (size_t i = 0; i < n; i++) in[i] = next_in++;
        rl_buf *b = rl_buf_new(n);
        if (!CHECK(b != NULL)) break;
        memcpy(b->data, in, n);
        b->len = n;
        /* alternate referenced and copied segments */
        if (round % 2) CHECK_EQ(rl_ring_push_ref(&r, b, b->data, n), 0);
        else CHECK_EQ(rl_ring_push_copy(&r, in, n), 0);
        rl_buf_unref(b);
        size_t want = r.bytes > 40 ? 40 : r.bytes;
        size_t got = drain(&r, out, want, want);
        for (size_t i = 0; i < got; i++) {
            if (!CHECK_EQ(out[i], next_out)) { rl_ring_free(&r); return; }
            next_out++;
        }
    }
    size_t got = drain(&r, out, sizeof out, sizeof out);
    while (got) {
        for (size_t i = 0; i < got; i++) CHECK_EQ(out[i], next_out++);
        got = drain(&r, out, sizeof out, sizeof out);
    }
    CHECK_EQ(next_in, next_out);
    rl_ring_free(&r);
}

static void test_ring_shared_buffer(void) {
    /* one buffer referenced by two rings (parameter broadcast) */
    rl_buf *b = rl_buf_new(1000);
    if (!CHECK(b != NULL)) return;
    memset(b->data, 0xAB, 1000);
    b->len = 1000;
    CHECK_EQ((long)((uintptr_t)b->data % 64), 0);
    rl_ring r1, r2;
    rl_ring_init(&r1);
    rl_ring_init(&r2);
    CHECK_EQ(rl_ring_push_ref(&r1, b, b->data, b->len), 0);
    CHECK_EQ(rl_ring_push_ref(&r2, b, b->data, b->len), 0);
    CHECK_EQ(b->refs, 3);
    /* a shared tail chunk must not be written into by a later copy */
    CHECK_EQ(rl_ring_push_copy(&r1, "xyz", 3), 0);
    CHECK_EQ(b->data[999], 0xAB);
    CHECK_EQU(r1.count, 2);
    rl_ring_consume(&r1, r1.bytes);
    CHECK_EQ(b->refs, 2);
    rl_ring_clear(&r2);
    CHECK_EQ(b->refs, 1);
    rl_buf_unref(b);
    rl_ring_free(&r1);
    rl_ring_free(&r2);
}

static void test_ring_ref_slices_coalesce(void) {
    /* frames packed one after another in one buffer (the retained window's
     * chunks) leave as one segment; a gap or another buffer starts a new one */
    rl_buf *b = rl_buf_new(300), *o = rl_buf_new(10);
    if (!CHECK(b != NULL && o != NULL)) { rl_buf_unref(b); rl_buf_unref(o); return; }
    for (int i = 0; i < 300; i++) b->data[i] = (uint8_t)i;
    rl_ring r;
    rl_ring_init(&r);
    CHECK_EQ(rl_ring_push_ref(&r, b, b->data, 100), 0);
    CHECK_EQ(rl_ring_push_ref(&r, b, b->data + 100, 50), 0);
    CHECK_EQU(r.count, 1);
    CHECK_EQ(b->refs, 2);   /* one reference for the merged segment */
    CHECK_EQ(rl_ring_push_ref(&r, b, b->data + 200, 50), 0);   /* a gap */
    CHECK_EQ(rl_ring_push_ref(&r, o, o->data, 10), 0);
    CHECK_EQ(rl_ring_push_ref(&r, b, b->data + 250, 50), 0);   /* after another buffer */
    CHECK_EQU(r.count, 4);
    CHECK_EQU(r.bytes, 260);
    void *bases[8];
    size_t lens[8];
    CHECK_EQ(rl_ring_peek(&r, bases, lens, 8), 4);
    CHECK(bases[0] == b->data && lens[0] == 150);
    /* a partly written head still takes the bytes after it */
    rl_ring_consume(&r, 260);
    CHECK_EQ(rl_ring_push_ref(&r, b, b->data, 10), 0);
    rl_ring_consume(&r, 4);
    CHECK_EQ(rl_ring_push_ref(&r, b, b->data + 10, 20), 0);
    CHECK_EQU(r.count, 1);
    CHECK_EQ(rl_ring_peek(&r, bases, lens, 8), 1);
    CHECK(bases[0] == b->data + 4 && lens[0] == 26);
    rl_ring_consume(&r, 26);
    CHECK_EQ(b->refs, 1);
    CHECK_EQ(o->refs, 1);
    rl_buf_unref(b);
    rl_buf_unref(o);
    rl_ring_free(&r);
}

static void test_mem_cache_reuses_the_latest_freed(void) {
    /* a large block comes back from the cache: the one freed last (its
     * bytes likeliest in cache), the smallest that fits, never one more
     * than twice the size asked for */
    size_t ca, cb, cc, cx;
    uint8_t *a = rl_mem_alloc(1u << 20, &ca), *b = rl_mem_alloc(1u << 20, &cb);
    uint8_t *c = rl_mem_alloc(3u << 20, &cc);
    if (!CHECK(a && b && c)) { rl_mem_free(a, ca); rl_mem_free(b, cb); rl_mem_free(c, cc); return; }
    rl_mem_free(a, ca);
    rl_mem_free(b, cb);
    rl_mem_free(c, cc);
    uint8_t *x = rl_mem_alloc(1u << 20, &cx);
    CHECK(x == b && cx == cb);
    uint8_t *y = rl_mem_alloc(1u << 20, &cx);
    CHECK(y == a);
    uint8_t *z = rl_mem_alloc(1u << 20, &cx);   /* c is too large for it */
    CHECK(z != c);
    rl_mem_free(x, cb);
    rl_mem_free(y, ca);
    rl_mem_free(z, cx);
    uint8_t *w = rl_mem_alloc(2u << 20, &cx);
    CHECK(w == c && cx == cc);
    rl_mem_free(w, cx);
}

static void test_ring_empty_ops(void) {
    rl_ring r;
    rl_ring_init(&r);
    void *bases[4];
    size_t lens[4];
    CHECK_EQ(rl_ring_peek(&r, bases, lens, 4), 0);
    rl_ring_consume(&r, 0);
    CHECK_EQ(rl_ring_push_copy(&r, "", 0), 0);
    CHECK_EQU(r.bytes, 0);
    rl_buf_unref(NULL);
    rl_ring_free(&r);
}

/* push_room hands out room the caller fills: in the tail chunk while it
 * fits, else in a chunk of its own; filled in pieces, it drains whole and
 * in order. A buffer someone else still references is never written. */
static void test_ring_push_room(void) {
    rl_ring r;
    rl_ring_init(&r);
    uint8_t src[3 * RL_RING_CHUNK], out[sizeof src];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 13 + 5);
    CHECK(rl_ring_push_room(&r, 0) == NULL);
    uint8_t *a = rl_ring_push_room(&r, 100);
    if (!CHECK(a != NULL)) return;
    memcpy(a, src, 40);              /* one frame, filled in two pieces */
    memcpy(a + 40, src + 40, 60);
    uint8_t *b = rl_ring_push_room(&r, 200);
    CHECK(b == a + 100);             /* coalesced into the same chunk */
    memcpy(b, src + 100, 200);
    CHECK_EQU(r.count, 1);
    CHECK_EQU(r.bytes, 300);
    /* a frame larger than a chunk: its own segment */
    uint8_t *c = rl_ring_push_room(&r, 2 * RL_RING_CHUNK);
    if (!CHECK(c != NULL)) return;
    memcpy(c, src + 300, 2 * RL_RING_CHUNK);
    CHECK_EQU(r.count, 2);
    /* the tail is shared (another reference): new room goes elsewhere */
    rl_buf *shared = rl_buf_new(64);
    CHECK_EQ(rl_ring_push_ref(&r, shared, shared->data, 0), 0);
    size_t before = 300 + 2 * RL_RING_CHUNK;
    uint8_t *d = rl_ring_push_room(&r, 10);
    if (!CHECK(d != NULL)) return;
    CHECK(d < shared->data || d >= shared->data + shared->cap);
    memcpy(d, src + before, 10);
    rl_buf_unref(shared);
    size_t got = drain(&r, out, sizeof out, 1000);
    CHECK_EQU(got, before + 10);
    CHECK(memcmp(src, out, got) == 0);
    rl_ring_free(&r);
}

static const rl_test ring_tests[] = {
    RL_TEST(test_ring_push_room),
    RL_TEST(test_ring_order_and_coalescing),
    RL_TEST(test_ring_interleaved),
    RL_TEST(test_ring_shared_buffer),
    RL_TEST(test_ring_ref_slices_coalesce),
    RL_TEST(test_mem_cache_reuses_the_latest_freed),
    RL_TEST(test_ring_empty_ops),
};

void run_ring_tests(void) { RL_RUN_SUITE(ring_tests); }
