/*
 * rl_os.h -- the portability layer: atomics, mutexes, condition variables,
 * threads, a monotonic clock, sleeping, aligned memory, socket basics.
 *
 * Macros, static-inline wrappers, and functions in rl_os.c; the rest of
 * csrc/ calls these names instead of pthread_*, __atomic_*, clock_gettime,
 * aligned_alloc or close() on a socket, so that an OS (or compiler)
 * difference lives here (and in rl_sock.c / rl_poll.c for sockets) and
 * nowhere else. Thread safety is that of the wrapped primitive: the mutex and
 * condition-variable functions are what they say; rl_atomic_* are atomic;
 * everything else is thread-safe.
 *
 * On Windows this header includes no SDK header (windows.h, winsock2.h:
 * their include order against each other and Python.h matters), only the
 * compiler's <intrin.h>; the Windows types below are opaque stand-ins of
 * the same size, checked in rl_os.c.
 *
 * Conventions:
 *   - rl_cond_* waits use the monotonic clock where the OS allows (Linux,
 *     Windows); deadlines are in rl_mono_ms() units, i.e. rl_now_ms().
 *   - rl_cond_wait_until returns 0 (woken, maybe spuriously) or ETIMEDOUT.
 *   - rl_thread_create returns 0 or nonzero; a thread function is declared
 *     `static RL_THREAD_RESULT RL_THREAD_CALL fn(void *arg)` and ends with
 *     `return 0;`.
 *   - rl_atomic_* take a pointer to a 4- or 8-byte integer (int, long,
 *     long long, size_t, uint64_t) and one of RL_RELAXED / RL_ACQUIRE /
 *     RL_RELEASE / RL_ACQ_REL. add/sub return the NEW value (like
 *     __atomic_add_fetch).
 *
 * Sockets are ints throughout csrc/ (fds on POSIX). On Windows a SOCKET is a
 * kernel handle: Windows guarantees handles have only 32 significant bits
 * (they may be truncated and sign-extended, which is how 32- and 64-bit
 * processes share them), and handle values are small multiples of 4, so a
 * SOCKET fits a non-negative int. RL_SOCKET(fd) converts back (sign-extends
 * -1 to INVALID_SOCKET); rl_fd_from_socket() converts a new SOCKET to an int
 * (-1 for INVALID_SOCKET). Winsock is started once, on first use
 * (rl_net_init), and never cleaned up (the process exit does that).
 */
#ifndef RL_OS_H
#define RL_OS_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(_WIN32)
#include <pthread.h>
#endif

/* ---- atomics ------------------------------------------------------------- */
#if (defined(_MSC_VER) && !defined(__clang__)) || defined(RL_ATOMICS_INTERLOCKED)
/* MSVC (C mode has no __atomic builtins, and <stdatomic.h> needs _Atomic
 * objects and /experimental:c11atomics): Interlocked intrinsics, chosen by
 * the operand's size. Each is a full barrier, so every order is honoured.
 * Results are long long (the caller's variable converts them back).
 * RL_ATOMICS_INTERLOCKED selects this branch under gcc/mingw too, which is
 * how it is tested (the mingw+wine stage of .ci/run). */
#include <intrin.h>
#define RL_RELAXED 0
#define RL_ACQUIRE 2
#define RL_RELEASE 3
#define RL_ACQ_REL 4
/* sizeof(*(p)), refusing to compile for any size but 4 and 8 */
#define RL__ASIZE(p) (sizeof(char[(sizeof(*(p)) == 4 || sizeof(*(p)) == 8) ? 1 : -1]) * 0 + sizeof(*(p)))
static inline long long rl__aload(volatile void *p, size_t size) {
    if (size == 8) return _InterlockedCompareExchange64((volatile long long *)p, 0, 0);
    return _InterlockedCompareExchange((volatile long *)p, 0, 0);
}
static inline void rl__astore(volatile void *p, size_t size, long long v) {
    if (size == 8) _InterlockedExchange64((volatile long long *)p, v);
    else _InterlockedExchange((volatile long *)p, (long)v);
}
/* unsigned arithmetic: wrap-around, no signed overflow */
static inline long long rl__aadd(volatile void *p, size_t size, unsigned long long v) {
    if (size == 8)
        return (long long)((unsigned long long)_InterlockedExchangeAdd64((volatile long long *)p, (long long)v) + v);
    return (long)((unsigned long)_InterlockedExchangeAdd((volatile long *)p, (long)(unsigned long)v) + (unsigned long)v);
}
#define rl_atomic_load(p, order) rl__aload((p), RL__ASIZE(p))
#define rl_atomic_store(p, v, order) rl__astore((p), RL__ASIZE(p), (long long)(v))
#define rl_atomic_add(p, v, order) rl__aadd((p), RL__ASIZE(p), (unsigned long long)(v))
#define rl_atomic_sub(p, v, order) rl__aadd((p), RL__ASIZE(p), 0ull - (unsigned long long)(v))
#else
#define RL_RELAXED __ATOMIC_RELAXED
#define RL_ACQUIRE __ATOMIC_ACQUIRE
#define RL_RELEASE __ATOMIC_RELEASE
#define RL_ACQ_REL __ATOMIC_ACQ_REL
#define rl_atomic_load(p, order) __atomic_load_n((p), (order))
#define rl_atomic_store(p, v, order) __atomic_store_n((p), (v), (order))
#define rl_atomic_add(p, v, order) __atomic_add_fetch((p), (v), (order))
#define rl_atomic_sub(p, v, order) __atomic_sub_fetch((p), (v), (order))
#endif

/* ---- CPU features: the SSE4.2 CRC32 instruction (x86-64) ------------------- */
/* RL_HAVE_SSE42_CRC: this compiler can emit it in a function marked
 * RL_TARGET_SSE42 (via <nmmintrin.h>'s _mm_crc32_*) while the rest of the
 * program stays baseline x86-64; rl_cpu_has_sse42() says whether this CPU
 * runs it. MSVC needs no target attribute for intrinsics. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(_MSC_VER)
#define RL_HAVE_SSE42_CRC 1
#define RL_TARGET_SSE42 __attribute__((target("sse4.2")))
static inline int rl_cpu_has_sse42(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}
#elif defined(_MSC_VER) && defined(_M_X64) && !defined(__clang__)
#include <intrin.h>
#define RL_HAVE_SSE42_CRC 1
#define RL_TARGET_SSE42
static inline int rl_cpu_has_sse42(void) {
    int r[4];
    __cpuid(r, 1);
    return (r[2] >> 20) & 1;   /* CPUID.1:ECX.SSE4_2 */
}
#endif

/* ---- spinning ---------------------------------------------------------------- */
/* RL_CPU_RELAX(): one iteration's pause in a spin-wait loop (the x86 PAUSE or
 * the Arm YIELD hint; nothing elsewhere). */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define RL_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define RL_CPU_RELAX() __asm__ __volatile__("yield")
#elif defined(_MSC_VER) && defined(_M_X64)
#include <intrin.h>
#define RL_CPU_RELAX() _mm_pause()
#else
#define RL_CPU_RELAX() ((void)0)
#endif

/* ---- clock, sleep, memory -------------------------------------------------- */
/* Nanoseconds / milliseconds from a monotonic clock (arbitrary epoch). */
long long rl_mono_ns(void);
long long rl_mono_ms(void);
void rl_sleep_ms(int ms);

/* size bytes aligned to align (a power of two, >= sizeof(void *)); NULL on
 * failure. Free with rl_aligned_free, never free() (Windows: _aligned_malloc
 * memory must go back to _aligned_free). */
void *rl_aligned_alloc(size_t align, size_t size);
void rl_aligned_free(void *p);

#if defined(_WIN32)
/* ---- Windows: SRWLOCK, CONDITION_VARIABLE, thread HANDLE ------------------- */
typedef struct rl_mutex { void *opaque; } rl_mutex;   /* an SRWLOCK */
#define RL_MUTEX_INITIALIZER { 0 }                    /* SRWLOCK_INIT */
void rl_mutex_init(rl_mutex *m);
void rl_mutex_destroy(rl_mutex *m);
void rl_mutex_lock(rl_mutex *m);
int rl_mutex_trylock(rl_mutex *m);   /* 1: taken; 0: held by another thread */
void rl_mutex_unlock(rl_mutex *m);

typedef struct rl_cond { void *opaque; } rl_cond;     /* a CONDITION_VARIABLE */
void rl_cond_init(rl_cond *cv);
void rl_cond_destroy(rl_cond *cv);
void rl_cond_broadcast(rl_cond *cv);
void rl_cond_wait(rl_cond *cv, rl_mutex *mu);

typedef void *rl_thread;                              /* a HANDLE */
#define RL_THREAD_RESULT unsigned
#define RL_THREAD_CALL __stdcall
#else
/* ---- POSIX: pthreads ------------------------------------------------------ */
typedef pthread_mutex_t rl_mutex;
#define RL_MUTEX_INITIALIZER PTHREAD_MUTEX_INITIALIZER
static inline void rl_mutex_init(rl_mutex *m) { pthread_mutex_init(m, NULL); }
static inline void rl_mutex_destroy(rl_mutex *m) { pthread_mutex_destroy(m); }
static inline void rl_mutex_lock(rl_mutex *m) { pthread_mutex_lock(m); }
static inline int rl_mutex_trylock(rl_mutex *m) { return pthread_mutex_trylock(m) == 0; }
static inline void rl_mutex_unlock(rl_mutex *m) { pthread_mutex_unlock(m); }

typedef pthread_cond_t rl_cond;
void rl_cond_init(rl_cond *cv);   /* on the monotonic clock where the OS allows */
static inline void rl_cond_destroy(rl_cond *cv) { pthread_cond_destroy(cv); }
static inline void rl_cond_broadcast(rl_cond *cv) { pthread_cond_broadcast(cv); }
static inline void rl_cond_wait(rl_cond *cv, rl_mutex *mu) { pthread_cond_wait(cv, mu); }

typedef pthread_t rl_thread;
#define RL_THREAD_RESULT void *
#define RL_THREAD_CALL
#endif

/* Wait on cv until woken or deadline_ms (rl_mono_ms() units; -1 = forever).
 * Returns 0 or ETIMEDOUT. */
int rl_cond_wait_until(rl_cond *cv, rl_mutex *mu, long long deadline_ms);

typedef RL_THREAD_RESULT (RL_THREAD_CALL *rl_thread_fn)(void *);
int rl_thread_create(rl_thread *t, rl_thread_fn fn, void *arg);
void rl_thread_join(rl_thread t);

/* How many fork()s lie between the process that first called this and the
 * caller: 0 there, 1 in its child, ... (an at-fork handler counts them,
 * registered on the first call; always 0 on Windows). A node records it when
 * created; a caller whose count differs is a forked child, where the node's
 * locks and threads are the parent's. Thread-safe. */
unsigned rl_fork_count(void);

/* Guard a process-wide mutex against fork(): it is held across every later
 * fork() (taken in the at-fork prepare handler, released in parent and
 * child), so a child never inherits it locked by a thread that does not
 * exist there. For leaf locks only: nothing else may be taken while holding
 * one. Call it before the mutex is first taken (a caller keeps its own
 * "done" flag: this call takes a lock). Idempotent; guards up to 8 mutexes
 * in all (more are refused: returns -1). Thread-safe. Windows: no fork(),
 * returns 0 and does nothing. */
int rl_fork_guard(rl_mutex *m);
/* Lock a process-wide leaf mutex, guarding it with rl_fork_guard on the
 * first call. *guarded is the caller's flag for that mutex (a static int,
 * 0 at first): after the first call, one atomic load more than
 * rl_mutex_lock. Thread-safe. */
void rl_mutex_lock_forksafe(rl_mutex *m, int *guarded);

/* ---- sockets -------------------------------------------------------------- */
/* Start the socket library once (Winsock 2.2; nothing elsewhere). Returns 0,
 * or -1. Every rl_sock function that makes a socket or resolves a name
 * calls it; thread-safe. */
int rl_net_init(void);

/* Close a socket (an int; see above). */
int rl_closesocket(int fd);

/* The error of the last failed socket call on this thread as an errno value
 * (EWOULDBLOCK, EINPROGRESS, ECONNREFUSED, ...), also stored in errno. On
 * Windows this maps WSAGetLastError(); rl_sock_errno_from maps a code from
 * SO_ERROR the same way. Elsewhere both are the identity on errno. */
int rl_sock_errno(void);
int rl_sock_errno_from(int code);

#if defined(_WIN32)
#define RL_SOCKET(fd) ((SOCKET)(intptr_t)(fd))
/* A new SOCKET (passed as uintptr_t) as an int; -1 if INVALID_SOCKET (or,
 * which Windows rules out, too large: then it is closed). */
int rl_fd_from_socket(uintptr_t s);
#endif

#endif
