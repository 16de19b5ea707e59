/* test_shm.c -- shared-memory regions: the slot allocator (against a model),
 * maps of a region, rejected descriptors, fd passing. */
#define _GNU_SOURCE
#include "rl_test.h"
#include "rl_shm.h"
#include "rl_frame.h"
#include "rl_os.h"

#ifdef _WIN32
/* No regions and no descriptor passing on Windows: rl_shm.c's stubs refuse. */
static void test_shm_windows_refuses(void) {
    const char *why = NULL;
    CHECK(rl_shm_create(1 << 20) == NULL);
    CHECK(rl_shm_map_fd(-1, 1 << 20, 0, &why) == NULL);
    CHECK(why != NULL);
    printf("skip: test_shm: no shared-memory regions on Windows\n");
}
static const rl_test shm_tests[] = {
    RL_TEST(test_shm_windows_refuses),
};
void run_shm_tests(void) { RL_RUN_SUITE(shm_tests); }
#else
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static size_t pg(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* memfd_create does not exist off Linux, so neither does a region. */
#ifdef __linux__
#define NEED_MEMFD() ((void)0)
#else
#define NEED_MEMFD()                                                       \
    do {                                                                   \
        printf("skip: %s: no memfd_create on this platform\n", __func__);  \
        return;                                                            \
    } while (0)
#endif

static int fd_closed(int fd) { return fcntl(fd, F_GETFD) == -1 && errno == EBADF; }

/* Open descriptors in this process: /proc/self/fd where there is one (the
 * DIR's own fd counts both times), else probe the low numbers. */
static int count_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.') n++;
        closedir(d);
        return n;
    }
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) != -1) n++;
    return n;
}

/* ---- allocator ---------------------------------------------------------- */
static void test_shm_create_basics(void) {
#ifndef __linux__
    NEED_MEMFD();   /* and F_GET_SEALS, memfd_create below may not exist */
#else
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(8 * p - 100);
    if (!CHECK(r != NULL)) return;
    CHECK_EQU(rl_shm_size(r), 8 * p);          /* rounded up to whole pages */
    CHECK(rl_shm_fd(r) >= 0);
    CHECK(fcntl(rl_shm_fd(r), F_GETFD) & FD_CLOEXEC);
    int seals = fcntl(rl_shm_fd(r), F_GET_SEALS);
    CHECK((seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) ==
          (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
    CHECK(ftruncate(rl_shm_fd(r), (off_t)(16 * p)) != 0);   /* sealed */
    /* Where the kernel knows MFD_NOEXEC_SEAL (6.3+), the region has it. */
    int probe = memfd_create("rlink-probe", MFD_CLOEXEC | 0x0008U);
    if (probe >= 0) {
        CHECK(seals & 0x0020);                              /* F_SEAL_EXEC */
        close(probe);
    } else {
        CHECK_EQ(errno, EINVAL);
    }
    memset(rl_shm_base(r), 0xab, rl_shm_size(r));          /* writable, all of it */
    CHECK_EQU(rl_shm_in_use(r), 0);
    rl_shm_destroy(r);
    rl_shm_destroy(NULL);
    errno = 0;
    CHECK(rl_shm_create(0) == NULL);
    CHECK_EQ(errno, EINVAL);
#endif
}

static void test_shm_alloc_fill(void) {
    NEED_MEMFD();
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(8 * p);
    if (!CHECK(r != NULL)) return;
    uint64_t off = 99;
    CHECK_EQ(rl_shm_alloc(r, 0, &off), -1);
    CHECK_EQ(rl_shm_alloc(r, 8 * p + 1, &off), -1);
    CHECK_EQU(off, 99);                                    /* untouched on failure */
    for (size_t i = 0; i < 8; i++) {
        CHECK_EQ(rl_shm_alloc(r, i == 0 ? 1 : p, &off), 0);  /* 1 byte is a page */
        CHECK_EQU(off, i * p);
        CHECK_EQU(rl_shm_in_use(r), (i + 1) * p);
    }
    CHECK_EQ(rl_shm_alloc(r, 1, &off), -1);                /* full */
    for (size_t i = 0; i < 8; i++) CHECK_EQ(rl_shm_release(r, i * p), 0);
    CHECK_EQU(rl_shm_in_use(r), 0);
    CHECK_EQ(rl_shm_alloc(r, 8 * p, &off), 0);             /* the whole region */
    CHECK_EQU(off, 0);
    CHECK_EQ(rl_shm_alloc(r, 1, &off), -1);
    CHECK_EQ(rl_shm_release(r, 0), 0);
    rl_shm_destroy(r);
}

/* Releases out of order free nothing until the oldest goes; then the space
 * is reused in ring order (after the newest, then from 0). */
static void test_shm_alloc_out_of_order(void) {
    NEED_MEMFD();
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(8 * p);
    if (!CHECK(r != NULL)) return;
    uint64_t a, b, c, d, e, f, g;
    CHECK_EQ(rl_shm_alloc(r, 2 * p, &a), 0);
    CHECK_EQ(rl_shm_alloc(r, 2 * p - 7, &b), 0);
    CHECK_EQ(rl_shm_alloc(r, 2 * p, &c), 0);
    CHECK_EQ(rl_shm_alloc(r, 2 * p, &d), 0);
    CHECK_EQU(b, 2 * p);
    CHECK_EQU(d, 6 * p);
    CHECK_EQ(rl_shm_release(r, c), 0);
    CHECK_EQ(rl_shm_release(r, b), 0);
    CHECK_EQU(rl_shm_in_use(r), 4 * p);
    CHECK_EQ(rl_shm_alloc(r, 1, &e), -1);      /* b, c are behind a: not free yet */
    CHECK_EQ(rl_shm_release(r, a), 0);         /* pops a, b, c */
    CHECK_EQU(rl_shm_in_use(r), 2 * p);
    CHECK_EQ(rl_shm_alloc(r, 3 * p, &e), 0);
    CHECK_EQU(e, 0);                            /* wrapped: nothing after d */
    CHECK_EQ(rl_shm_alloc(r, 3 * p, &f), 0);
    CHECK_EQU(f, 3 * p);
    CHECK_EQ(rl_shm_alloc(r, 1, &g), -1);      /* f ends where d starts */
    CHECK_EQU(rl_shm_in_use(r), 8 * p);
    CHECK_EQ(rl_shm_release(r, d), 0);
    CHECK_EQ(rl_shm_alloc(r, 2 * p, &g), 0);   /* after the newest (f) */
    CHECK_EQU(g, 6 * p);
    CHECK_EQ(rl_shm_release(r, e), 0);
    CHECK_EQ(rl_shm_release(r, f), 0);
    CHECK_EQ(rl_shm_release(r, g), 0);
    CHECK_EQU(rl_shm_in_use(r), 0);
    rl_shm_destroy(r);
}

static void test_shm_alloc_wrap(void) {
    NEED_MEMFD();
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(8 * p);
    if (!CHECK(r != NULL)) return;
    uint64_t s1, s2, s3, s4, s5, x;
    CHECK_EQ(rl_shm_alloc(r, 3 * p, &s1), 0);
    CHECK_EQ(rl_shm_alloc(r, 3 * p, &s2), 0);
    CHECK_EQ(rl_shm_release(r, s1), 0);
    CHECK_EQ(rl_shm_alloc(r, 2 * p, &s3), 0);
    CHECK_EQU(s3, 6 * p);                      /* after the newest first */
    CHECK_EQ(rl_shm_alloc(r, 4 * p, &x), -1);  /* only 3 pages before s2 */
    CHECK_EQ(rl_shm_alloc(r, 3 * p, &s4), 0);
    CHECK_EQU(s4, 0);                          /* wrapped */
    CHECK_EQ(rl_shm_alloc(r, 1, &x), -1);      /* wrapped: s4 ends at s2 */
    CHECK_EQ(rl_shm_release(r, s2), 0);        /* oldest now s3 at 6p */
    CHECK_EQ(rl_shm_alloc(r, 4 * p, &x), -1);  /* [3p, 6p) is 3 pages */
    CHECK_EQ(rl_shm_alloc(r, 3 * p, &s5), 0);
    CHECK_EQU(s5, 3 * p);
    CHECK_EQ(rl_shm_alloc(r, 1, &x), -1);
    CHECK_EQ(rl_shm_release(r, s3), 0);        /* oldest now s4 at 0 */
    CHECK_EQ(rl_shm_alloc(r, 2 * p, &x), 0);   /* unwrapped again: after s5 */
    CHECK_EQU(x, 6 * p);
    CHECK_EQ(rl_shm_release(r, s4), 0);
    CHECK_EQ(rl_shm_release(r, s5), 0);
    CHECK_EQ(rl_shm_release(r, x), 0);
    CHECK_EQU(rl_shm_in_use(r), 0);
    CHECK_EQ(rl_shm_alloc(r, 8 * p, &x), 0);   /* empty FIFO restarts at 0 */
    CHECK_EQU(x, 0);
    rl_shm_destroy(r);
}

/* A slot held for long blocks the space behind it (even released slots),
 * but the space before it is used once the ring wraps. */
static void test_shm_held_slot(void) {
    NEED_MEMFD();
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(8 * p);
    if (!CHECK(r != NULL)) return;
    uint64_t s[4], x, y;
    for (int i = 0; i < 4; i++) CHECK_EQ(rl_shm_alloc(r, 2 * p, &s[i]), 0);
    CHECK_EQ(rl_shm_release(r, s[0]), 0);
    CHECK_EQ(rl_shm_release(r, s[2]), 0);
    CHECK_EQ(rl_shm_release(r, s[3]), 0);      /* s[1] held */
    CHECK_EQU(rl_shm_in_use(r), 2 * p);
    CHECK_EQ(rl_shm_alloc(r, 3 * p, &x), -1);  /* 6 pages free, none reachable */
    CHECK_EQ(rl_shm_alloc(r, 2 * p, &x), 0);
    CHECK_EQU(x, 0);                            /* before the held slot */
    CHECK_EQ(rl_shm_alloc(r, 1, &y), -1);
    CHECK_EQ(rl_shm_release(r, s[2]), -1);     /* released, still queued: twice */
    CHECK_EQ(rl_shm_release(r, s[1]), 0);      /* pops s1, s2, s3 */
    CHECK_EQ(rl_shm_alloc(r, 6 * p, &y), 0);
    CHECK_EQU(y, 2 * p);
    CHECK_EQU(rl_shm_in_use(r), 8 * p);
    CHECK_EQ(rl_shm_release(r, x), 0);
    CHECK_EQ(rl_shm_release(r, y), 0);
    rl_shm_destroy(r);
}

static void test_shm_release_errors(void) {
    NEED_MEMFD();
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(8 * p);
    if (!CHECK(r != NULL)) return;
    uint64_t a, b, x;
    CHECK_EQ(rl_shm_release(r, 0), -1);        /* nothing allocated */
    CHECK_EQ(rl_shm_alloc(r, 2 * p, &a), 0);
    CHECK_EQ(rl_shm_alloc(r, 2 * p, &b), 0);
    CHECK_EQ(rl_shm_release(r, a + p), -1);    /* inside a slot */
    CHECK_EQ(rl_shm_release(r, 1), -1);        /* misaligned */
    CHECK_EQ(rl_shm_release(r, 6 * p), -1);    /* free space */
    CHECK_EQ(rl_shm_release(r, 8 * p), -1);    /* end of the region */
    CHECK_EQ(rl_shm_release(r, UINT64_MAX), -1);
    CHECK_EQU(rl_shm_in_use(r), 4 * p);        /* nothing changed */
    CHECK_EQ(rl_shm_release(r, a), 0);
    CHECK_EQ(rl_shm_release(r, a), -1);        /* twice (already popped) */
    CHECK_EQU(rl_shm_in_use(r), 2 * p);
    CHECK_EQ(rl_shm_alloc(r, 4 * p, &x), 0);   /* the errors did not disturb order */
    CHECK_EQU(x, 4 * p);
    CHECK_EQ(rl_shm_release(r, b), 0);
    CHECK_EQ(rl_shm_release(r, b), -1);
    CHECK_EQ(rl_shm_release(r, x), 0);
    CHECK_EQU(rl_shm_in_use(r), 0);
    rl_shm_destroy(r);
}

/* Reference model: live slots in an array in ring order (shifted, not
 * circular) and a page-owner map; the allocation rule restated from the
 * header: after the newest slot, else at 0 if that fits before the oldest. */
#define MODEL_PAGES 64
typedef struct { uint64_t off, len; int released; } model_slot;

static uint32_t rng_next(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void test_shm_alloc_model(void) {
    NEED_MEMFD();
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(MODEL_PAGES * p);
    if (!CHECK(r != NULL)) return;
    model_slot live[MODEL_PAGES];
    int owner[MODEL_PAGES];   /* page -> 1 if inside a queued slot */
    int n = 0, allocs = 0, fails = 0, wraps = 0;
    uint64_t used = 0;
    uint32_t seed = 0x9e3779b9u;
    memset(owner, 0, sizeof owner);
    for (int op = 0; op < 5000 && rl_test_g.failures == 0; op++) {
        uint32_t roll = rng_next(&seed) % 100;
        if (roll < 55) {
            size_t len = 1 + rng_next(&seed) % (6 * p);
            uint64_t need = (len + p - 1) / p * p, want = UINT64_MAX, got = 0;
            if (n == 0) {
                want = 0;
            } else {
                uint64_t old = live[0].off, end = live[n - 1].off + live[n - 1].len;
                if (live[n - 1].off >= old) {
                    if (end + need <= MODEL_PAGES * p) want = end;
                    else if (need <= old) want = 0;
                } else if (end + need <= old) {
                    want = end;
                }
            }
            int rc = rl_shm_alloc(r, len, &got);
            CHECK_EQ(rc, want == UINT64_MAX ? -1 : 0);
            if (rc != 0) { fails++; continue; }
            CHECK_EQU(got, want);
            CHECK_EQU(got % p, 0);
            CHECK(got + need <= MODEL_PAGES * p);
            for (uint64_t q = got / p; q < (got + need) / p; q++) {
                CHECK(!owner[q]);          /* no overlap with any queued slot */
                owner[q] = 1;
            }
            if (n && got < live[n - 1].off) wraps++;
            live[n].off = got;
            live[n].len = need;
            live[n].released = 0;
            n++;
            used += need;
            allocs++;
            /* the pages are really there: write the slot's first and last byte */
            rl_shm_base(r)[got] = (uint8_t)op;
            rl_shm_base(r)[got + need - 1] = (uint8_t)op;
        } else if (roll < 90) {
            int k = 0, cand[MODEL_PAGES];
            for (int i = 0; i < n; i++)
                if (!live[i].released) cand[k++] = i;
            if (k == 0) continue;
            int i = cand[rng_next(&seed) % (uint32_t)k];
            CHECK_EQ(rl_shm_release(r, live[i].off), 0);
            live[i].released = 1;
            used -= live[i].len;
            int pop = 0;
            while (pop < n && live[pop].released) {
                for (uint64_t q = live[pop].off / p; q < (live[pop].off + live[pop].len) / p; q++)
                    owner[q] = 0;
                pop++;
            }
            memmove(live, live + pop, (size_t)(n - pop) * sizeof live[0]);
            n -= pop;
        } else {
            /* a bogus release: released-but-queued, inside a slot, or unaligned */
            uint64_t off = (uint64_t)(rng_next(&seed) % (MODEL_PAGES * p + 3));
            int valid = 0;
            for (int i = 0; i < n; i++)
                if (live[i].off == off && !live[i].released) valid = 1;
            if (valid) continue;
            CHECK_EQ(rl_shm_release(r, off), -1);
        }
        CHECK_EQU(rl_shm_in_use(r), used);
    }
    CHECK(allocs > 1000);
    CHECK(fails > 50);       /* the full / blocked paths were exercised */
    CHECK(wraps > 50);
    for (int i = 0; i < n; i++)
        if (!live[i].released) CHECK_EQ(rl_shm_release(r, live[i].off), 0);
    CHECK_EQU(rl_shm_in_use(r), 0);
    rl_shm_destroy(r);
}

/* Threads allocating and releasing concurrently never get overlapping
 * slots: each fills its slots with its id and checks them before release. */
#define SHM_THREADS 4
typedef struct { rl_shm_region *r; int id; int bad; int allocs; int *ready; } shm_worker;

static RL_THREAD_RESULT RL_THREAD_CALL shm_worker_fn(void *arg) {
    shm_worker *w = arg;
    size_t p = pg();
    uint64_t held[8], lens[8];
    int nh = 0;
    uint32_t seed = 0x1234567u * (uint32_t)(w->id + 1);
    /* start together so that the threads really contend (bounded wait) */
    rl_atomic_add(w->ready, 1, RL_ACQ_REL);
    for (int i = 0; i < 5000 && rl_atomic_load(w->ready, RL_ACQUIRE) < SHM_THREADS; i++)
        rl_sleep_ms(1);
    for (int it = 0; it < 100000 && w->allocs < 500; it++) {
        if (nh < 4 && rng_next(&seed) % 2) {
            size_t len = 1 + rng_next(&seed) % (2 * p);
            uint64_t off;
            if (rl_shm_alloc(w->r, len, &off) == 0) {
                memset(rl_shm_base(w->r) + off, w->id, len);
                held[nh] = off;
                lens[nh++] = len;
                w->allocs++;
            } else if (nh == 0) {
                rl_sleep_ms(1);   /* blocked behind another thread's slot: let it run */
            }
        } else if (nh > 0) {
            int i = 0;   /* oldest first, as a receiver mostly does */
            const uint8_t *s = rl_shm_base(w->r) + held[i];
            for (size_t j = 0; j < lens[i]; j++)
                if (s[j] != (uint8_t)w->id) { w->bad++; break; }
            if (rl_shm_release(w->r, held[i]) != 0) w->bad++;
            nh--;
            memmove(held, held + 1, (size_t)nh * sizeof held[0]);
            memmove(lens, lens + 1, (size_t)nh * sizeof lens[0]);
        }
    }
    while (nh > 0)
        if (rl_shm_release(w->r, held[--nh]) != 0) w->bad++;
    return 0;
}

static void test_shm_alloc_threads(void) {
    NEED_MEMFD();
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(64 * p);
    if (!CHECK(r != NULL)) return;
    shm_worker w[SHM_THREADS];
    rl_thread t[SHM_THREADS];
    int started[SHM_THREADS], ready = 0;
    for (int i = 0; i < SHM_THREADS; i++) {
        w[i].r = r;
        w[i].id = i + 1;
        w[i].bad = w[i].allocs = 0;
        w[i].ready = &ready;
        started[i] = CHECK_EQ(rl_thread_create(&t[i], shm_worker_fn, &w[i]), 0);
    }
    for (int i = 0; i < SHM_THREADS; i++) {
        if (!started[i]) continue;
        rl_thread_join(t[i]);
        CHECK_EQ(w[i].bad, 0);
        CHECK_EQ(w[i].allocs, 500);   /* a blocked ring always drains */
    }
    CHECK_EQU(rl_shm_in_use(r), 0);
    uint64_t off;
    CHECK_EQ(rl_shm_alloc(r, 64 * p, &off), 0);   /* everything was popped */
    rl_shm_destroy(r);
}

/* ---- maps ----------------------------------------------------------------- */
static void test_shm_map_shared(void) {
    NEED_MEMFD();
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(4 * p);
    if (!CHECK(r != NULL)) return;
    uint8_t *s = rl_shm_base(r);
    uint64_t a, b;
    CHECK_EQ(rl_shm_alloc(r, p, &a), 0);
    CHECK_EQ(rl_shm_alloc(r, p, &b), 0);
    memset(s + a, 'A', p);
    memset(s + b, 'B', p);
    const char *why = "unset";
    int fd = dup(rl_shm_fd(r));
    rl_shm_map *m = rl_shm_map_fd(fd, rl_shm_size(r), 0, &why);
    if (!CHECK(m != NULL)) { printf("  map: %s\n", why); rl_shm_destroy(r); return; }
    CHECK(fd_closed(fd));                       /* the map does not keep the fd */
    CHECK_EQU(rl_shm_map_size(m), 4 * p);
    uint8_t *v = rl_shm_map_base(m);
    CHECK(v != s);
    CHECK(v[a] == 'A' && v[a + p - 1] == 'A' && v[b] == 'B');
    s[a + 10] = 'x';                            /* a slot the sender fills: visible */
    CHECK(v[a + 10] == 'x');
    v[b + 5] = 'q';                             /* the receiver may write into its slot */
    CHECK(v[b + 5] == 'q');
    /* a slot reused after its release shows the sender's new bytes, with no
     * call on the receiver's side (nothing of the old content lingers) */
    CHECK_EQ(rl_shm_release(r, a), 0);
    CHECK_EQ(rl_shm_release(r, b), 0);
    uint64_t c;
    CHECK_EQ(rl_shm_alloc(r, p, &c), 0);
    CHECK_EQU(c, 0);
    memset(s + c, 'C', p);
    CHECK(v[c] == 'C' && v[c + 20] == 'C' && v[c + p - 1] == 'C');
    CHECK(rl_shm_map_holds(m, c, p) && rl_shm_map_holds(m, 3 * p, p) && rl_shm_map_holds(m, 4 * p, 0));
    CHECK(!rl_shm_map_holds(m, 3 * p, p + 1) && !rl_shm_map_holds(m, c + 1, 1));
    CHECK(!rl_shm_map_holds(m, 5 * p, 0) && !rl_shm_map_holds(m, p, UINT64_MAX));
    /* references; the region may go first, the map still reads */
    CHECK(rl_shm_map_ref(m) == m);
    rl_shm_map_unref(m);
    CHECK(v[c] == 'C');                         /* still mapped after one unref */
    memset(s + c, 'D', p);
    rl_shm_destroy(r);
    CHECK(v[c] == 'D' && v[c + p - 1] == 'D');
    rl_shm_map_unref(m);
    rl_shm_map_unref(NULL);
}

/* A region whose slots go to several receivers: each maps it copy-on-write,
 * so that its writes stay its own, and discards its copies of a slot before
 * releasing it, after which the owner's next content shows. */
#ifdef __linux__
/* Whether page p of this process is mapped (pagemap bit 63), or -1. */
static int page_mapped(const void *p) {
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    uint64_t e = 0;
    ssize_t r = pread(fd, &e, sizeof e, (off_t)((uintptr_t)p / pg() * sizeof e));
    close(fd);
    return r == (ssize_t)sizeof e ? (int)(e >> 63) : -1;
}
#endif

/* A copy-on-write map whose slot was only read keeps its pages mapped
 * through a discard (they still show the file: no page faults when the
 * slot is used again); a slot written here loses them. */
static void test_shm_map_discard_only_written(void) {
    NEED_MEMFD();
#ifdef __linux__
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(4 * p);
    if (!CHECK(r != NULL)) return;
    uint8_t *s = rl_shm_base(r);
    memset(s, 'A', 4 * p);
    const char *why = "unset";
    rl_shm_map *m = rl_shm_map_fd(dup(rl_shm_fd(r)), rl_shm_size(r), 1, &why);
    if (!CHECK(m != NULL)) { rl_shm_destroy(r); return; }
    volatile uint8_t *v = rl_shm_map_base(m);
    CHECK(v[0] == 'A' && v[2 * p] == 'A');   /* read: both mapped */
    v[2 * p + 5] = 'w';                      /* written: a private copy */
    if (page_mapped((const void *)v) == 1) {
        rl_shm_map_discard(m, 0, p);
        CHECK_EQ(page_mapped((const void *)v), 1);
        rl_shm_map_discard(m, 2 * p, p);
        CHECK_EQ(page_mapped((const void *)(v + 2 * p)), 0);
        s[0] = 'B';                          /* the owner reuses both */
        s[2 * p + 5] = 'B';
        CHECK(v[0] == 'B' && v[2 * p + 5] == 'B');
    } else {
        printf("skip: %s: /proc/self/pagemap unreadable\n", __func__);
    }
    rl_shm_map_unref(m);
    rl_shm_destroy(r);
#endif
}

static void test_shm_map_copy_on_write(void) {
    NEED_MEMFD();
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(4 * p);
    if (!CHECK(r != NULL)) return;
    uint8_t *s = rl_shm_base(r);
    uint64_t a;
    CHECK_EQ(rl_shm_alloc(r, 2 * p, &a), 0);
    memset(s + a, 'A', 2 * p);
    const char *why = "unset";
    rl_shm_map *m1 = rl_shm_map_fd(dup(rl_shm_fd(r)), rl_shm_size(r), 1, &why);
    rl_shm_map *m2 = rl_shm_map_fd(dup(rl_shm_fd(r)), rl_shm_size(r), 1, &why);
    if (!CHECK(m1 != NULL && m2 != NULL)) {
        printf("  map: %s\n", why);
        rl_shm_map_unref(m1);
        rl_shm_map_unref(m2);
        rl_shm_destroy(r);
        return;
    }
    uint8_t *v1 = rl_shm_map_base(m1), *v2 = rl_shm_map_base(m2);
    CHECK(v1[a] == 'A' && v2[a + 2 * p - 1] == 'A');
    v1[a + 3] = 'x';                            /* receiver 1 writes into its view */
    v1[a + p + 7] = 'y';
    CHECK(v1[a + 3] == 'x' && v1[a + p + 7] == 'y');
    CHECK(v2[a + 3] == 'A' && v2[a + p + 7] == 'A');   /* not seen by receiver 2 */
    CHECK(s[a + 3] == 'A' && s[a + p + 7] == 'A');     /* nor by the owner */
    /* both release; the owner reuses the slot */
    rl_shm_map_discard(m1, a, p + 8);           /* rounded out to whole pages */
    rl_shm_map_discard(m2, a, 2 * p);
    rl_shm_map_discard(m1, 3 * p, 2 * p);       /* outside the map: ignored */
    CHECK_EQ(rl_shm_release(r, a), 0);
    uint64_t b;
    CHECK_EQ(rl_shm_alloc(r, 2 * p, &b), 0);
    CHECK_EQU(b, a);
    memset(s + b, 'B', 2 * p);
    CHECK(v1[b + 3] == 'B' && v1[b + p + 7] == 'B' && v1[b + 2 * p - 1] == 'B');
    CHECK(v2[b + 3] == 'B');
    /* a shared map ignores discard: what the receiver wrote stays */
    rl_shm_map *m3 = rl_shm_map_fd(dup(rl_shm_fd(r)), rl_shm_size(r), 0, &why);
    if (CHECK(m3 != NULL)) {
        uint8_t *v3 = rl_shm_map_base(m3);
        v3[b] = 'z';
        rl_shm_map_discard(m3, b, p);
        CHECK(v3[b] == 'z' && s[b] == 'z');
        rl_shm_map_unref(m3);
    }
    rl_shm_map_unref(m1);
    rl_shm_map_unref(m2);
    rl_shm_destroy(r);
}

/* Make a memory file of size bytes with the given seals (-1: no sealing
 * allowed at all). */
#ifdef __linux__
static int make_memfd(size_t size, int seals) {
    int fd = memfd_create("rlink-test", MFD_CLOEXEC | (seals >= 0 ? MFD_ALLOW_SEALING : 0u));
    if (fd < 0) return -1;
    if (ftruncate(fd, (off_t)size) != 0 || (seals > 0 && fcntl(fd, F_ADD_SEALS, seals) != 0)) {
        close(fd);
        return -1;
    }
    return fd;
}
#endif

/* map_fd refuses fd (closing it) with a reason containing want. */
static int rejects(int fd, uint64_t size, const char *want) {
    const char *why = NULL;
    rl_shm_map *m = rl_shm_map_fd(fd, size, 0, &why);
    int ok = m == NULL && why != NULL && strstr(why, want) != NULL && fd_closed(fd);
    if (!ok) printf("  fd %d size %llu: want \"%s\", got \"%s\"\n", fd,
                    (unsigned long long)size, want, why ? why : "(none)");
    rl_shm_map_unref(m);
    return ok;
}

static void test_shm_map_rejects(void) {
    int pfd[2];
    const char *why = NULL;
    CHECK(rl_shm_map_fd(-1, 4096, 0, &why) == NULL && why != NULL);
    CHECK(rl_shm_map_fd(-1, 4096, 0, NULL) == NULL);   /* why may be NULL */
#ifdef __linux__
    size_t p = pg();
    CHECK(rejects(make_memfd(4 * p, 0), 4 * p, "not sealed against shrinking"));
    CHECK(rejects(make_memfd(4 * p, F_SEAL_SHRINK), 4 * p, "not sealed against growing"));
    CHECK(rejects(make_memfd(4 * p, F_SEAL_GROW), 4 * p, "not sealed against shrinking"));
    CHECK(rejects(make_memfd(4 * p, -1), 4 * p, "not sealed"));   /* F_SEAL_SEAL only */
    CHECK(rejects(make_memfd(4 * p + 100, F_SEAL_SHRINK | F_SEAL_GROW), 4 * p + 100,
                  "whole pages"));
    CHECK(rejects(make_memfd(0, F_SEAL_SHRINK | F_SEAL_GROW), 0, "empty"));
    rl_shm_region *r = rl_shm_create(4 * p);
    if (CHECK(r != NULL)) {
        CHECK(rejects(dup(rl_shm_fd(r)), 4 * p + p, "size"));
        CHECK(rejects(dup(rl_shm_fd(r)), 4 * p - p, "size"));
        CHECK(rejects(dup(rl_shm_fd(r)), 0, "size"));
        rl_shm_map *m = rl_shm_map_fd(dup(rl_shm_fd(r)), 4 * p, 0, &why);  /* control */
        CHECK(m != NULL);
        rl_shm_map_unref(m);
        rl_shm_destroy(r);
    }
    const char *not_memfd = "not a sealable memory file";
#else
    const char *not_memfd = "not supported";
#endif
    if (CHECK(pipe(pfd) == 0)) {
        CHECK(rejects(pfd[0], 4096, not_memfd));
        CHECK(rejects(pfd[1], 4096, not_memfd));
    }
    CHECK(rejects(open("/dev/null", O_RDWR | O_CLOEXEC), 4096, not_memfd));
}

/* Off Linux there are no regions, and maps refuse everything. */
static void test_shm_unsupported(void) {
#ifdef __linux__
    errno = 0;   /* here: only absurd sizes fail */
    CHECK(rl_shm_create(SIZE_MAX) == NULL);
    CHECK_EQ(errno, EINVAL);
#else
    errno = 0;
    CHECK(rl_shm_create(1 << 20) == NULL);
    CHECK_EQ(errno, ENOSYS);
#endif
}

/* ---- fd passing ------------------------------------------------------------ */
static void test_shm_pass_fd(void) {
    int sv[2], pfd[2], fds[2] = {-1, -1}, nfds = -1;
    char buf[64];
    if (!CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0)) return;
    if (!CHECK(pipe(pfd) == 0)) { close(sv[0]); close(sv[1]); return; }
    /* a pipe goes everywhere SCM_RIGHTS does */
    CHECK_EQ(rl_sock_write_fd(sv[0], "hello", 5, pfd[1]), 5);
    CHECK_EQ(rl_sock_read_fds(sv[1], buf, sizeof buf, fds, 2, &nfds), 5);
    CHECK(memcmp(buf, "hello", 5) == 0);
    if (CHECK_EQ(nfds, 1)) {
        CHECK(fds[0] != pfd[1]);
        CHECK(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
        CHECK_EQ(write(fds[0], "via", 3), 3);       /* the same pipe */
        CHECK_EQ(read(pfd[0], buf, sizeof buf), 3);
        CHECK(memcmp(buf, "via", 3) == 0);
        close(fds[0]);
    }
    /* plain bytes: no fds */
    CHECK_EQ(send(sv[0], "plain", 5, 0), 5);
    nfds = -1;
    CHECK_EQ(rl_sock_read_fds(sv[1], buf, sizeof buf, fds, 2, &nfds), 5);
    CHECK_EQ(nfds, 0);
    CHECK(memcmp(buf, "plain", 5) == 0);
    /* fd < 0 sends plain bytes; n == 0 sends nothing */
    CHECK_EQ(rl_sock_write_fd(sv[0], "x", 1, -1), 1);
    CHECK_EQ(rl_sock_write_fd(sv[0], "y", 0, pfd[1]), 0);
    CHECK_EQ(rl_sock_read_fds(sv[1], buf, sizeof buf, fds, 2, &nfds), 1);
    CHECK_EQ(nfds, 0);
#ifdef __linux__
    /* a region: the received fd maps the same memory */
    size_t p = pg();
    rl_shm_region *r = rl_shm_create(2 * p);
    if (CHECK(r != NULL)) {
        memcpy(rl_shm_base(r) + p, "region bytes", 12);
        CHECK_EQ(rl_sock_write_fd(sv[0], "R", 1, rl_shm_fd(r)), 1);
        CHECK_EQ(rl_sock_read_fds(sv[1], buf, sizeof buf, fds, 1, &nfds), 1);
        if (CHECK_EQ(nfds, 1)) {
            const char *why = NULL;
            rl_shm_map *m = rl_shm_map_fd(fds[0], rl_shm_size(r), 0, &why);
            if (CHECK(m != NULL)) {
                CHECK(memcmp(rl_shm_map_base(m) + p, "region bytes", 12) == 0);
                rl_shm_base(r)[p] = 'R';
                CHECK(rl_shm_map_base(m)[p] == 'R');
                rl_shm_map_unref(m);
            }
        }
        rl_shm_destroy(r);
    }
#endif
    /* would block, then the peer goes away */
    CHECK(fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK) == 0);
    CHECK_EQ(rl_sock_read_fds(sv[1], buf, sizeof buf, fds, 1, &nfds), RL_EAGAIN);
    close(sv[0]);
    CHECK_EQ(rl_sock_read_fds(sv[1], buf, sizeof buf, fds, 1, &nfds), 0);   /* EOF */
    CHECK_EQ(nfds, 0);
    CHECK_EQ(rl_sock_write_fd(sv[1], "z", 1, pfd[0]), RL_ECONNLOST);      /* no SIGPIPE */
    CHECK_EQ(rl_sock_read_fds(-1, buf, sizeof buf, fds, 1, &nfds), RL_ECONNLOST);
    close(sv[1]);
    close(pfd[0]);
    close(pfd[1]);
}

/* Send k copies of fd in one SCM_RIGHTS message with the byte c. */
static int send_fds(int sock, char c, int fd, int k) {
    int v[64];
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof v)]; } cb;
    struct iovec iov = {&c, 1};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    memset(&cb, 0, sizeof cb);
    for (int i = 0; i < k; i++) v[i] = fd;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cb.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)k);
    struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)k);
    memcpy(CMSG_DATA(h), v, sizeof(int) * (size_t)k);
    return (int)sendmsg(sock, &mh, 0);
}

/* More fds than max: the first max are kept (the caller's), the rest
 * closed, *nfds = max + 1; nothing leaks, also when the kernel truncates. */
static void test_shm_pass_too_many(void) {
    int before = count_fds();
    int sv[2], fds[4], nfds = -1;
    char buf[8];
    if (!CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0)) return;
    int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(nul >= 0);
    CHECK_EQ(send_fds(sv[0], 'a', nul, 3), 1);
    CHECK_EQ(send_fds(sv[0], 'b', nul, 40), 1);   /* more than fits: MSG_CTRUNC */
    CHECK_EQ(send_fds(sv[0], 'c', nul, 2), 1);
    CHECK_EQ(send_fds(sv[0], 'd', nul, 1), 1);
    CHECK_EQ(send_fds(sv[0], 'e', nul, 2), 1);
    close(nul);

    CHECK_EQ(rl_sock_read_fds(sv[1], buf, 1, fds, 1, &nfds), 1);
    CHECK(buf[0] == 'a');
    CHECK_EQ(nfds, 2);
    CHECK(fcntl(fds[0], F_GETFD) != -1);          /* the first is the caller's */
    close(fds[0]);

    CHECK_EQ(rl_sock_read_fds(sv[1], buf, 1, fds, 1, &nfds), 1);
    CHECK(buf[0] == 'b');
    CHECK_EQ(nfds, 2);
    CHECK(fcntl(fds[0], F_GETFD) != -1);
    close(fds[0]);

    CHECK_EQ(rl_sock_read_fds(sv[1], buf, 1, fds, 2, &nfds), 1);   /* exactly max */
    CHECK(buf[0] == 'c');
    CHECK_EQ(nfds, 2);
    close(fds[0]);
    close(fds[1]);

    CHECK_EQ(rl_sock_read_fds(sv[1], buf, 1, fds, 0, &nfds), 1);   /* none wanted */
    CHECK(buf[0] == 'd');
    CHECK_EQ(nfds, 1);

    fds[0] = fds[1] = fds[2] = -1;
    CHECK_EQ(rl_sock_read_fds(sv[1], buf, 1, fds, 3, &nfds), 1);   /* fewer than max */
    CHECK(buf[0] == 'e');
    CHECK_EQ(nfds, 2);
    CHECK_EQ(fds[2], -1);
    close(fds[0]);
    close(fds[1]);

#ifdef SO_PASSCRED
    /* Credentials take the control room first: the fd is truncated away
     * (MSG_CTRUNC), which must read as "too many", not as "none". */
    int one = 1;
    if (CHECK(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) == 0)) {
        nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
        CHECK_EQ(send_fds(sv[0], 'f', nul, 1), 1);
        close(nul);
        fds[0] = fds[1] = 1234;   /* garbage: must not be left for the caller to close */
        CHECK_EQ(rl_sock_read_fds(sv[1], buf, 1, fds, 2, &nfds), 1);
        CHECK(buf[0] == 'f');
        CHECK_EQ(nfds, 3);
        CHECK_EQ(fds[0], -1);     /* the credentials took all the room */
        CHECK_EQ(fds[1], -1);
        if (fds[0] >= 0 && fds[0] != 1234) close(fds[0]);
    }
#endif
    close(sv[0]);
    close(sv[1]);
    CHECK_EQ(count_fds(), before);
}

static const rl_test shm_tests[] = {
    RL_TEST(test_shm_create_basics),
    RL_TEST(test_shm_alloc_fill),
    RL_TEST(test_shm_alloc_out_of_order),
    RL_TEST(test_shm_alloc_wrap),
    RL_TEST(test_shm_held_slot),
    RL_TEST(test_shm_release_errors),
    RL_TEST(test_shm_alloc_model),
    RL_TEST(test_shm_alloc_threads),
    RL_TEST(test_shm_map_shared),
    RL_TEST(test_shm_map_copy_on_write),
    RL_TEST(test_shm_map_discard_only_written),
    RL_TEST(test_shm_map_rejects),
    RL_TEST(test_shm_unsupported),
    RL_TEST(test_shm_pass_fd),
    RL_TEST(test_shm_pass_too_many),
};
void run_shm_tests(void) { RL_RUN_SUITE(shm_tests); }
#endif /* !_WIN32 */
