/* test_os.c -- the portability layer (rl_os.h) and the socket helpers
 * (rl_sock.h, rl_poll.h) on their own, so that each OS's implementation of
 * them (POSIX; Windows under mingw+wine in .ci/run) is checked directly, not
 * only through the node tests. */
#include "rl_auth.h"
#include "rl_frame.h"
#include "rl_os.h"
#include "rl_poll.h"
#include "rl_sock.h"
#include "rl_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if !defined(_WIN32)
#include <sys/wait.h>
#include <unistd.h>
#endif

/* ---- clock, sleep, condition variables ------------------------------------ */
static void test_os_clock_sleep(void) {
    long long t0 = rl_mono_ns(), m0 = rl_mono_ms();
    rl_sleep_ms(30);
    long long dt = rl_mono_ns() - t0, dm = rl_mono_ms() - m0;
    CHECK(dt >= 25 * 1000000LL);   /* timers may round a little */
    CHECK(dt < 5000 * 1000000LL);
    CHECK(dm >= 25 && dm < 5000);
    CHECK(rl_now_ms() - rl_mono_ms() <= 1 && rl_mono_ms() - rl_now_ms() <= 1);   /* one clock */
}

static void test_os_cond_timeout(void) {
    rl_mutex mu;
    rl_cond cv;
    rl_mutex_init(&mu);
    rl_cond_init(&cv);
    rl_mutex_lock(&mu);
    CHECK_EQ(rl_cond_wait_until(&cv, &mu, rl_mono_ms() - 1), ETIMEDOUT);   /* already past */
    long long t0 = rl_mono_ms(), deadline = t0 + 60;
    int rc = 0, turns = 0;
    while (turns++ < 1000 && (rc = rl_cond_wait_until(&cv, &mu, deadline)) == 0) {
    }   /* 0 = a spurious wake-up: wait again */
    CHECK_EQ(rc, ETIMEDOUT);
    long long dt = rl_mono_ms() - t0;
    CHECK(dt >= 55);
    CHECK(dt < 5000);
    rl_mutex_unlock(&mu);
    rl_cond_destroy(&cv);
    rl_mutex_destroy(&mu);
}

/* ---- threads, atomics, mutex + condition variable handshake --------------- */
#define NTHREADS 4
#define NITER 20000
static struct {
    rl_mutex mu;
    rl_cond cv;
    int go;              /* under mu */
    long long locked;    /* under mu */
    uint64_t u64;        /* atomic */
    long refs;           /* atomic */
    int i32;             /* atomic */
    size_t sz;           /* atomic */
} sh;

static RL_THREAD_RESULT RL_THREAD_CALL worker(void *arg) {
    (void)arg;
    rl_mutex_lock(&sh.mu);
    while (!sh.go) rl_cond_wait(&sh.cv, &sh.mu);
    rl_mutex_unlock(&sh.mu);
    for (int i = 0; i < NITER; i++) {
        rl_atomic_add(&sh.u64, 3, RL_RELAXED);
        rl_atomic_add(&sh.refs, 1, RL_RELAXED);
        rl_atomic_sub(&sh.i32, 1, RL_ACQ_REL);
        rl_atomic_add(&sh.sz, 2, RL_RELAXED);
        rl_mutex_lock(&sh.mu);
        sh.locked++;
        rl_mutex_unlock(&sh.mu);
    }
    return 0;
}

static void test_os_threads_atomics(void) {
    rl_thread t[NTHREADS];
    memset(&sh, 0, sizeof sh);
    rl_mutex_init(&sh.mu);
    rl_cond_init(&sh.cv);
    rl_atomic_store(&sh.i32, 7, RL_RELEASE);
    rl_atomic_store(&sh.u64, 0xffffffff00000000ull, RL_RELEASE);   /* carries into the top half */
    int started = 0;
    for (int i = 0; i < NTHREADS; i++)
        if (CHECK_EQ(rl_thread_create(&t[i], worker, NULL), 0)) started++;
    rl_mutex_lock(&sh.mu);
    sh.go = 1;
    rl_cond_broadcast(&sh.cv);
    rl_mutex_unlock(&sh.mu);
    for (int i = 0; i < started; i++) rl_thread_join(t[i]);
    CHECK_EQ(started, NTHREADS);
    CHECK_EQU(rl_atomic_load(&sh.u64, RL_ACQUIRE), 0xffffffff00000000ull + 3ull * NTHREADS * NITER);
    CHECK_EQ(rl_atomic_load(&sh.refs, RL_ACQUIRE), (long)NTHREADS * NITER);
    CHECK_EQ(rl_atomic_load(&sh.i32, RL_ACQUIRE), 7 - NTHREADS * NITER);   /* negative: sign kept */
    CHECK_EQU(rl_atomic_load(&sh.sz, RL_RELAXED), 2u * NTHREADS * NITER);
    CHECK_EQ(sh.locked, (long long)NTHREADS * NITER);
    /* add/sub return the new value */
    CHECK_EQ(rl_atomic_add(&sh.refs, 5, RL_RELAXED), (long)NTHREADS * NITER + 5);
    CHECK_EQ(rl_atomic_sub(&sh.refs, (long)NTHREADS * NITER + 5, RL_ACQ_REL), 0);
    CHECK_EQ(rl_atomic_sub(&sh.refs, 1, RL_ACQ_REL), -1);
    rl_cond_destroy(&sh.cv);
    rl_mutex_destroy(&sh.mu);
}

/* ---- memory, randomness --------------------------------------------------- */
static void test_os_aligned_random(void) {
    size_t sizes[] = {0, 1, 63, 64, 100, 65536, 3u << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        uint8_t *p = rl_aligned_alloc(64, sizes[i]);
        if (!CHECK(p != NULL)) continue;
        CHECK_EQ((long)((uintptr_t)p % 64), 0);
        memset(p, 0xab, sizes[i]);
        rl_aligned_free(p);
    }
    rl_aligned_free(NULL);
    uint8_t a[32], b[32];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    CHECK_EQ(rl_random_bytes(a, sizeof a), 0);
    CHECK_EQ(rl_random_bytes(b, sizeof b), 0);
    CHECK(memcmp(a, b, sizeof a) != 0);
}

/* ---- sockets -------------------------------------------------------------- */
/* A connected loopback TCP pair (client c, accepted s); 0 or -1. */
static int tcp_pair(int *c, int *s, int *lfd_out) {
    int port = 0;
    int lfd = rl_sock_listen("127.0.0.1", 0, &port);
    *c = *s = -1;
    if (!CHECK(lfd >= 0) || !CHECK(port > 0)) return -1;
    *c = rl_sock_connect("127.0.0.1", port, 5000);
    if (!CHECK(*c >= 0)) { rl_closesocket(lfd); return -1; }
    for (int i = 0; i < 500 && *s < 0; i++) {
        rl_sock_wait(lfd, RL_POLLIN, 10);
        int fd = rl_sock_accept(lfd);
        if (fd >= 0) *s = fd;
        else if (!CHECK_EQ(fd, RL_EAGAIN)) break;
    }
    if (lfd_out) *lfd_out = lfd;
    else rl_closesocket(lfd);
    return CHECK(*s >= 0) ? 0 : -1;
}

static void test_sock_io(void) {
    int c, s;
    if (tcp_pair(&c, &s, NULL)) return;
    /* nothing to read yet */
    char buf[64];
    CHECK_EQ(rl_sock_read(s, buf, sizeof buf), RL_EAGAIN);
    CHECK_EQ(rl_sock_unread(s), 0);
    rl_pollin set[3] = {{-1, 7}, {s, 7}, {-1, 7}};
    CHECK_EQ(rl_sock_poll_in(set, 3, 0), 0);
    CHECK(!set[0].ready && !set[1].ready && !set[2].ready);
    /* a gathered write arrives in order */
    char p1[] = "hello, ", p2[] = "gathered ", p3[] = "world";
    void *bases[3] = {p1, p2, p3};
    size_t lens[3] = {strlen(p1), strlen(p2), strlen(p3)};
    size_t total = lens[0] + lens[1] + lens[2];
    CHECK_EQ(rl_sock_writev(c, bases, lens, 3), (long long)total);
    CHECK_EQ(rl_sock_wait(s, RL_POLLIN, 5000), 0);
    int unread = 0;
    for (int i = 0; i < 500 && (unread = rl_sock_unread(s)) < (int)total; i++) rl_sleep_ms(10);
    CHECK_EQ(unread, (long long)total);
    CHECK_EQ(rl_sock_poll_in(set, 3, 1000), 1);
    CHECK(!set[0].ready && set[1].ready && !set[2].ready);
    size_t got = 0;
    for (int i = 0; i < 500 && got < total; i++) {
        ssize_t r = rl_sock_read(s, buf + got, sizeof buf - got);
        if (r > 0) got += (size_t)r;
        else rl_sleep_ms(10);
    }
    CHECK_EQU(got, total);
    CHECK(memcmp(buf, "hello, gathered world", total) == 0);
    /* writable at once */
    CHECK_EQ(rl_sock_wait(c, RL_POLLOUT, 1000), 0);
    /* a FIN: readable, then end of stream */
    rl_sock_shutdown(c, RL_SHUT_WR);
    CHECK_EQ(rl_sock_poll_in(set, 3, 5000), 1);
    CHECK(set[1].ready);
    ssize_t r = RL_EAGAIN;
    for (int i = 0; i < 500 && r == RL_EAGAIN; i++) {
        r = rl_sock_read(s, buf, sizeof buf);
        if (r == RL_EAGAIN) rl_sleep_ms(10);
    }
    CHECK_EQ(r, 0);
    /* the other direction still works after a half close */
    char back[] = "bye";
    void *bb = back;
    size_t bl = 3;
    CHECK_EQ(rl_sock_writev(s, &bb, &bl, 1), 3);
    CHECK_EQ(rl_sock_wait(c, RL_POLLIN, 5000), 0);
    CHECK_EQ(rl_sock_read(c, buf, sizeof buf), 3);
    CHECK_EQ(rl_closesocket(c), 0);
    CHECK_EQ(rl_closesocket(s), 0);
    /* a wait with nothing coming times out */
    int c2, s2;
    if (tcp_pair(&c2, &s2, NULL)) return;
    long long t0 = rl_now_ms();
    CHECK_EQ(rl_sock_wait(s2, RL_POLLIN, 50), RL_ETIMEDOUT);
    CHECK(rl_now_ms() - t0 >= 40);
    rl_closesocket(c2);
    rl_closesocket(s2);
}

static void test_sock_errors(void) {
    /* a port nobody listens on: refused */
    int port = 0;
    int lfd = rl_sock_listen("127.0.0.1", 0, &port);
    if (!CHECK(lfd >= 0)) return;
    /* the port is taken while we listen */
    int again = 0;
    CHECK_EQ(rl_sock_listen("127.0.0.1", port, &again), RL_EADDRINUSE);
    rl_closesocket(lfd);
    CHECK_EQ(rl_sock_connect("127.0.0.1", port, 5000), RL_ECONNREFUSED);
    CHECK_EQ(rl_sock_listen("127.0.0.1", 70000, &again), RL_EINVAL);
    CHECK_EQ(rl_sock_accept(-1), RL_ESYS);
}

static void test_sock_waker_poller(void) {
    rl_waker w;
    if (!CHECK_EQ(rl_waker_open(&w), 0)) return;
    rl_poller *p = rl_poller_new();
    if (!CHECK(p != NULL)) { rl_waker_close(&w); return; }
    rl_poll_event ev[4];
    int tag = 42;
    CHECK_EQ(rl_poller_set(p, w.rfd, RL_POLLIN, &tag), 0);
    CHECK_EQ(rl_poller_wait(p, ev, 4, 0), 0);
    rl_waker_wake(&w);
    rl_waker_wake(&w);   /* twice: still one readiness */
    CHECK_EQ(rl_poller_wait(p, ev, 4, 5000), 1);
    CHECK_EQ(ev[0].fd, w.rfd);
    CHECK(ev[0].events & RL_POLLIN);
    CHECK(ev[0].ctx == &tag);
    rl_waker_drain(&w);
    CHECK_EQ(rl_poller_wait(p, ev, 4, 0), 0);
    /* silenced (events 0), then removed */
    rl_waker_wake(&w);
    CHECK_EQ(rl_poller_set(p, w.rfd, 0, &tag), 0);
    CHECK_EQ(rl_poller_wait(p, ev, 4, 20), 0);
    CHECK_EQ(rl_poller_set(p, w.rfd, RL_POLLIN, &tag), 0);
    CHECK_EQ(rl_poller_wait(p, ev, 4, 5000), 1);
    rl_waker_drain(&w);
    /* microsecond timeouts: nothing ready, and at least that long waited
     * (a fraction of a millisecond: epoll_pwait2, or rounded up) */
    for (long long us = 1; us <= 1500; us *= 7) {
        long long t0 = rl_mono_ns();
        CHECK_EQ(rl_poller_wait_us(p, ev, 4, us), 0);
        CHECK(rl_mono_ns() - t0 >= us * 1000);
    }
    rl_waker_wake(&w);
    CHECK_EQ(rl_poller_wait_us(p, ev, 4, 300), 1);   /* ready: no wait */
    CHECK_EQ(ev[0].fd, w.rfd);
    rl_waker_drain(&w);
    CHECK_EQ(rl_poller_del(p, w.rfd), 0);
    CHECK_EQ(rl_poller_del(p, w.rfd), RL_EINVAL);
    /* POLLOUT on a fresh connection, POLLIN + end of stream when the peer closes */
    int c, s;
    if (tcp_pair(&c, &s, NULL) == 0) {
        CHECK_EQ(rl_poller_set(p, c, RL_POLLOUT, &c), 0);
        CHECK_EQ(rl_poller_set(p, s, RL_POLLIN, &s), 0);
        int n = rl_poller_wait(p, ev, 4, 5000);
        CHECK_EQ(n, 1);
        if (n == 1) { CHECK(ev[0].ctx == &c); CHECK(ev[0].events & RL_POLLOUT); }
        CHECK_EQ(rl_poller_set(p, c, 0, &c), 0);
        rl_closesocket(c);
        CHECK_EQ(rl_poller_del(p, c), 0);
        n = rl_poller_wait(p, ev, 4, 5000);
        CHECK_EQ(n, 1);
        if (n == 1) { CHECK(ev[0].ctx == &s); CHECK(ev[0].events & RL_POLLIN); }
        char b[8];
        CHECK_EQ(rl_sock_read(s, b, sizeof b), 0);
        rl_poller_del(p, s);
        rl_closesocket(s);
    }
    rl_poller_free(p);
    rl_waker_close(&w);
}

static struct { rl_waker *w; int delay_ms; } waker_arg;
static RL_THREAD_RESULT RL_THREAD_CALL waker_thread(void *arg) {
    (void)arg;
    rl_sleep_ms(waker_arg.delay_ms);
    rl_waker_wake(waker_arg.w);
    return 0;
}

static void test_sock_waker_cross_thread(void) {
    rl_waker w;
    if (!CHECK_EQ(rl_waker_open(&w), 0)) return;
    rl_poller *p = rl_poller_new();
    rl_poll_event ev[2];
    rl_thread t;
    CHECK_EQ(rl_poller_set(p, w.rfd, RL_POLLIN, NULL), 0);
    waker_arg.w = &w;
    waker_arg.delay_ms = 50;
    long long t0 = rl_now_ms();
    if (CHECK_EQ(rl_thread_create(&t, waker_thread, NULL), 0)) {
        CHECK_EQ(rl_poller_wait(p, ev, 2, -1), 1);   /* forever: only the wake ends it */
        CHECK(rl_now_ms() - t0 >= 40);
        rl_thread_join(t);
    }
    rl_waker_drain(&w);
    rl_poller_free(p);
    rl_waker_close(&w);
}

/* ---- same-host endpoints -------------------------------------------------- */
static void test_sock_local(void) {
    char names[8][RL_LOCAL_NAME_MAX];
#if defined(_WIN32)
    CHECK_EQ(rl_sock_listen_local("rlink/test", 1), RL_EINVAL);
    CHECK_EQ(rl_sock_listen_local("rlink-test.sock", 0), RL_EINVAL);
    CHECK_EQ(rl_sock_connect_local("rlink/test", 1), RL_EINVAL);
    CHECK_EQ(rl_sock_local_candidates("127.0.0.1", 9, names, 8), 0);   /* so: TCP */
    RL_SKIP("no AF_UNIX same-host endpoints on Windows (no abstract namespace; "
            "rl_sock_*_local return RL_EINVAL, checked above, and peers use TCP)");
#else
    char name[RL_LOCAL_NAME_MAX];
    int port = 0;
    int lfd = rl_sock_listen("127.0.0.1", 0, &port);
    if (!CHECK(lfd >= 0)) return;
    CHECK_EQ(rl_sock_local_name(lfd, name), 0);
    char want[RL_LOCAL_NAME_MAX];
    snprintf(want, sizeof want, "rlink/127.0.0.1:%d", port);
    CHECK(strcmp(name, want) == 0);
    int l2 = rl_sock_listen_local(name, 1);
#if defined(__linux__)
    CHECK(l2 >= 0);
    int k = rl_sock_local_candidates("127.0.0.1", port, names, 8);
    CHECK(k >= 1);
    if (k >= 1) CHECK(strcmp(names[0], want) == 0);
    int c = rl_sock_connect_local(name, 1);
    CHECK(c >= 0);
    if (c >= 0) rl_closesocket(c);
#else
    CHECK_EQ(l2, RL_EINVAL);   /* no abstract namespace */
    CHECK_EQ(rl_sock_local_candidates("127.0.0.1", port, names, 8), 0);
#endif
    if (l2 >= 0) rl_closesocket(l2);
    rl_closesocket(lfd);
#endif
}

/* A forked child counts one fork more than its parent; the parent's count
 * does not change. */
static void test_os_fork_count(void) {
    unsigned before = rl_fork_count();
    CHECK_EQ(rl_fork_count(), before);
#if !defined(_WIN32)
    fflush(stdout);
    pid_t pid = fork();
    if (!CHECK(pid >= 0)) return;
    if (pid == 0) _exit(rl_fork_count() == before + 1 ? 0 : 1);
    int st = 0;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ(rl_fork_count(), before);
#else
    CHECK_EQ(before, 0);
#endif
}

/* A guarded mutex that another thread holds when fork() is called: fork
 * waits for its release, and the child finds it free. (Unguarded, the child
 * would inherit it locked, by a thread that does not exist there.) */
static struct { rl_mutex mu; int locked; } guard_arg = {RL_MUTEX_INITIALIZER, 0};
#if !defined(_WIN32)
static RL_THREAD_RESULT RL_THREAD_CALL guard_holder(void *arg) {
    (void)arg;
    rl_mutex_lock(&guard_arg.mu);
    rl_atomic_store(&guard_arg.locked, 1, RL_RELEASE);
    rl_sleep_ms(50);   /* the main thread forks meanwhile */
    rl_mutex_unlock(&guard_arg.mu);
    return 0;
}
#endif

static void test_os_fork_guard(void) {
    CHECK_EQ(rl_fork_guard(&guard_arg.mu), 0);
    CHECK_EQ(rl_fork_guard(&guard_arg.mu), 0);   /* idempotent */
#if !defined(_WIN32)
    rl_thread t;
    if (!CHECK_EQ(rl_thread_create(&t, guard_holder, NULL), 0)) return;
    for (int i = 0; i < 5000 && !rl_atomic_load(&guard_arg.locked, RL_ACQUIRE); i++) rl_sleep_ms(1);
    CHECK(rl_atomic_load(&guard_arg.locked, RL_ACQUIRE));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) _exit(rl_mutex_trylock(&guard_arg.mu) ? 0 : 1);
    rl_thread_join(t);
    if (!CHECK(pid >= 0)) return;
    int st = 0;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* and the parent's is free again */
    if (CHECK(rl_mutex_trylock(&guard_arg.mu))) rl_mutex_unlock(&guard_arg.mu);
#endif
}

static const rl_test os_tests[] = {
    RL_TEST(test_os_fork_count),
    RL_TEST(test_os_fork_guard),
    RL_TEST(test_os_clock_sleep),
    RL_TEST(test_os_cond_timeout),
    RL_TEST(test_os_threads_atomics),
    RL_TEST(test_os_aligned_random),
    RL_TEST(test_sock_io),
    RL_TEST(test_sock_errors),
    RL_TEST(test_sock_waker_poller),
    RL_TEST(test_sock_waker_cross_thread),
    RL_TEST(test_sock_local),
};

void run_os_tests(void) { RL_RUN_SUITE(os_tests); }
