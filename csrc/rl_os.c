/* rl_os.c -- the portability layer's functions. See rl_os.h. */
#define _GNU_SOURCE
#include "rl_os.h"

#include <time.h>
#include <unistd.h>

long long rl_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

long long rl_mono_ms(void) { return rl_mono_ns() / 1000000; }

void rl_sleep_ms(int ms) {
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

void rl_cond_init(rl_cond *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
#if defined(__linux__)
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
#endif
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

int rl_cond_wait_until(rl_cond *cv, rl_mutex *mu, long long deadline_ms) {
    if (deadline_ms < 0) return pthread_cond_wait(cv, mu);
    long long now = rl_mono_ms();
    if (now >= deadline_ms) return ETIMEDOUT;
    /* pthread_cond_timedwait takes an absolute time on the cv's clock:
     * CLOCK_MONOTONIC on Linux (rl_cond_init), CLOCK_REALTIME elsewhere. */
    struct timespec ts;
#if defined(__linux__)
    clock_gettime(CLOCK_MONOTONIC, &ts);
#else
    clock_gettime(CLOCK_REALTIME, &ts);
#endif
    long long left = deadline_ms - now;
    ts.tv_sec += (time_t)(left / 1000);
    ts.tv_nsec += (long)(left % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    return pthread_cond_timedwait(cv, mu, &ts);
}

int rl_thread_create(rl_thread *t, rl_thread_fn fn, void *arg) {
    return pthread_create(t, NULL, fn, arg);
}

void rl_thread_join(rl_thread t) { pthread_join(t, NULL); }

int rl_closesocket(int fd) { return close(fd); }
