/* rl_os.c -- the portability layer's functions. See rl_os.h. */
#if !defined(_WIN32)
#define _GNU_SOURCE
#endif
#include "rl_os.h"

#include <stdlib.h>

#if defined(_WIN32)
/* ======================================================================== */
/* Windows                                                                  */
/* ======================================================================== */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <windows.h>
#include <malloc.h>
#include <process.h>

/* The opaque stand-ins in rl_os.h must match what they stand for. */
typedef char rl_check_mutex_size[sizeof(rl_mutex) == sizeof(SRWLOCK) ? 1 : -1];
typedef char rl_check_cond_size[sizeof(rl_cond) == sizeof(CONDITION_VARIABLE) ? 1 : -1];
typedef char rl_check_thread_size[sizeof(rl_thread) == sizeof(HANDLE) ? 1 : -1];

long long rl_mono_ns(void) {
    /* QueryPerformanceCounter: monotonic, sub-microsecond. Split to avoid
     * overflowing count * 1e9. The frequency is fixed at boot. */
    LARGE_INTEGER c, f;
    QueryPerformanceCounter(&c);
    QueryPerformanceFrequency(&f);
    long long sec = c.QuadPart / f.QuadPart, rem = c.QuadPart % f.QuadPart;
    return sec * 1000000000LL + rem * 1000000000LL / f.QuadPart;
}

long long rl_mono_ms(void) { return rl_mono_ns() / 1000000; }

void rl_sleep_ms(int ms) { Sleep(ms < 0 ? 0 : (DWORD)ms); }

void *rl_aligned_alloc(size_t align, size_t size) { return _aligned_malloc(size ? size : 1, align); }
void rl_aligned_free(void *p) { _aligned_free(p); }

void rl_mutex_init(rl_mutex *m) { InitializeSRWLock((PSRWLOCK)m); }
void rl_mutex_destroy(rl_mutex *m) { (void)m; }   /* an SRWLOCK holds no resources */
void rl_mutex_lock(rl_mutex *m) { AcquireSRWLockExclusive((PSRWLOCK)m); }
int rl_mutex_trylock(rl_mutex *m) { return TryAcquireSRWLockExclusive((PSRWLOCK)m) != 0; }
void rl_mutex_unlock(rl_mutex *m) { ReleaseSRWLockExclusive((PSRWLOCK)m); }

void rl_cond_init(rl_cond *cv) { InitializeConditionVariable((PCONDITION_VARIABLE)cv); }
void rl_cond_destroy(rl_cond *cv) { (void)cv; }
void rl_cond_broadcast(rl_cond *cv) { WakeAllConditionVariable((PCONDITION_VARIABLE)cv); }
void rl_cond_wait(rl_cond *cv, rl_mutex *mu) {
    SleepConditionVariableSRW((PCONDITION_VARIABLE)cv, (PSRWLOCK)mu, INFINITE, 0);
}

int rl_cond_wait_until(rl_cond *cv, rl_mutex *mu, long long deadline_ms) {
    if (deadline_ms < 0) { rl_cond_wait(cv, mu); return 0; }
    long long left = deadline_ms - rl_mono_ms();
    if (left <= 0) return ETIMEDOUT;
    if (left > 0x7fffffffLL) left = 0x7fffffffLL;   /* below INFINITE; callers loop */
    /* The timeout is relative, so the wall clock does not matter. A wake-up
     * a little early (timer granularity) returns 0: callers re-check. */
    if (SleepConditionVariableSRW((PCONDITION_VARIABLE)cv, (PSRWLOCK)mu, (DWORD)left, 0)) return 0;
    return GetLastError() == ERROR_TIMEOUT ? ETIMEDOUT : 0;
}

int rl_thread_create(rl_thread *t, rl_thread_fn fn, void *arg) {
    /* _beginthreadex, not CreateThread: the C runtime's per-thread state
     * (errno, ...) is set up for the new thread. */
    uintptr_t h = _beginthreadex(NULL, 0, fn, arg, 0, NULL);
    if (h == 0) return -1;
    *t = (rl_thread)h;
    return 0;
}

void rl_thread_join(rl_thread t) {
    WaitForSingleObject((HANDLE)t, INFINITE);
    CloseHandle((HANDLE)t);
}

static INIT_ONCE net_once = INIT_ONCE_STATIC_INIT;
static int net_ok;

static BOOL CALLBACK net_start(PINIT_ONCE once, PVOID param, PVOID *ctx) {
    WSADATA wd;
    (void)once; (void)param; (void)ctx;
    net_ok = WSAStartup(MAKEWORD(2, 2), &wd) == 0;
    return TRUE;
}

int rl_net_init(void) {
    InitOnceExecuteOnce(&net_once, net_start, NULL, NULL);
    return net_ok ? 0 : -1;
}

int rl_closesocket(int fd) { return closesocket(RL_SOCKET(fd)) == 0 ? 0 : -1; }

int rl_fd_from_socket(uintptr_t s) {
    if ((SOCKET)s == INVALID_SOCKET) return -1;
    if (s > 0x7fffffffu) {   /* not a valid handle value; never seen */
        closesocket((SOCKET)s);
        errno = EMFILE;
        return -1;
    }
    return (int)s;
}

/* The one place where Winsock error codes become errno values. */
int rl_sock_errno_from(int code) {
    int e;
    switch (code) {
    case 0: e = 0; break;
    case WSAEWOULDBLOCK: e = EWOULDBLOCK; break;
    case WSAEINPROGRESS: e = EINPROGRESS; break;
    case WSAEALREADY: e = EALREADY; break;
    case WSAEINTR: e = EINTR; break;
    case WSAECONNREFUSED: e = ECONNREFUSED; break;
    case WSAECONNRESET: e = ECONNRESET; break;
    case WSAECONNABORTED: e = ECONNABORTED; break;
    case WSAENETRESET: e = ECONNRESET; break;
    case WSAESHUTDOWN: e = EPIPE; break;
    case WSAENOTCONN: e = ENOTCONN; break;
    case WSAETIMEDOUT: e = ETIMEDOUT; break;
    case WSAEADDRINUSE: e = EADDRINUSE; break;
    case WSAEADDRNOTAVAIL: e = EADDRNOTAVAIL; break;
    case WSAEACCES: e = EACCES; break;
    case WSAEAFNOSUPPORT: e = EAFNOSUPPORT; break;
    case WSAEHOSTUNREACH: e = EHOSTUNREACH; break;
    case WSAENETUNREACH: e = ENETUNREACH; break;
    case WSAENETDOWN: e = ENETDOWN; break;
    case WSAEMFILE: e = EMFILE; break;
    case WSAENOBUFS: e = ENOBUFS; break;
    case WSAENOTSOCK: e = ENOTSOCK; break;
    case WSAEINVAL: e = EINVAL; break;
    case WSAEFAULT: e = EFAULT; break;
    case WSAEMSGSIZE: e = EMSGSIZE; break;
    case WSAEOPNOTSUPP: e = EOPNOTSUPP; break;
    case WSANOTINITIALISED: e = EINVAL; break;
    default: e = EIO; break;
    }
    errno = e;
    return e;
}

int rl_sock_errno(void) { return rl_sock_errno_from(WSAGetLastError()); }

unsigned rl_fork_count(void) { return 0; }   /* no fork() */

int rl_fork_guard(rl_mutex *m) { (void)m; return 0; }   /* no fork() */

#else
/* ======================================================================== */
/* POSIX                                                                    */
/* ======================================================================== */
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

void *rl_aligned_alloc(size_t align, size_t size) {
    /* C11 aligned_alloc wants a size that is a multiple of the alignment */
    size_t sz = (size + align - 1) & ~(align - 1);
    return aligned_alloc(align, sz ? sz : align);
}
void rl_aligned_free(void *p) { free(p); }

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

int rl_net_init(void) { return 0; }

int rl_closesocket(int fd) { return close(fd); }

int rl_sock_errno_from(int code) { errno = code; return code; }

int rl_sock_errno(void) { return errno; }

static unsigned fork_count;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_in_child(void) { fork_count++; }   /* one thread exists here */
static void fork_register(void) { pthread_atfork(NULL, NULL, fork_in_child); }

unsigned rl_fork_count(void) {
    pthread_once(&fork_once, fork_register);
    return rl_atomic_load(&fork_count, RL_RELAXED);
}

/* rl_fork_guard: the guarded mutexes, appended under guard_mu and never
 * removed. The prepare handler takes guard_mu, then each guarded mutex in
 * the order they were guarded; parent and child release them in reverse. */
#define FORK_GUARDS 8
static pthread_mutex_t guard_mu = PTHREAD_MUTEX_INITIALIZER;
static rl_mutex *guarded[FORK_GUARDS];
static int nguarded;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;

static void guard_prepare(void) {
    pthread_mutex_lock(&guard_mu);
    for (int i = 0; i < nguarded; i++) rl_mutex_lock(guarded[i]);
}

static void guard_release(void) {
    for (int i = nguarded - 1; i >= 0; i--) rl_mutex_unlock(guarded[i]);
    pthread_mutex_unlock(&guard_mu);
}

static void guard_register(void) { pthread_atfork(guard_prepare, guard_release, guard_release); }

int rl_fork_guard(rl_mutex *m) {
    pthread_once(&guard_once, guard_register);
    int rc = -1;
    pthread_mutex_lock(&guard_mu);
    for (int i = 0; i < nguarded; i++)
        if (guarded[i] == m) rc = 0;
    if (rc && nguarded < FORK_GUARDS) {
        guarded[nguarded++] = m;
        rc = 0;
    }
    pthread_mutex_unlock(&guard_mu);
    return rc;
}
#endif

void rl_mutex_lock_forksafe(rl_mutex *m, int *guarded) {
    if (!rl_atomic_load(guarded, RL_ACQUIRE)) {
        rl_fork_guard(m);
        rl_atomic_store(guarded, 1, RL_RELEASE);
    }
    rl_mutex_lock(m);
}
