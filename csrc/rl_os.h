/*
 * rl_os.h -- the portability layer: atomics, mutexes, condition variables,
 * threads, a monotonic clock, sleeping, closing a socket.
 *
 * Macros, static-inline wrappers, and functions in rl_os.c; the rest of
 * csrc/ calls these names instead of pthread_*, __atomic_*, clock_gettime or
 * close() on a socket, so that an OS (or compiler) difference lives here and
 * nowhere else. Thread safety is that of the wrapped primitive: the mutex and
 * condition-variable functions are what they say; rl_atomic_* are atomic.
 *
 * Conventions:
 *   - rl_cond_* waits use the monotonic clock where the OS allows (Linux);
 *     deadlines are in rl_mono_ms() units, i.e. the same as rl_now_ms().
 *   - rl_cond_wait_until returns 0 (woken, maybe spuriously) or ETIMEDOUT.
 *   - rl_thread_create returns 0 or nonzero; a thread function is declared
 *     `static RL_THREAD_RESULT RL_THREAD_CALL fn(void *arg)` and ends with
 *     `return 0;`.
 *   - rl_atomic_* take a pointer to an int, long, long long or 64-bit
 *     integer and one of RL_RELAXED / RL_ACQUIRE / RL_RELEASE / RL_ACQ_REL.
 *     add/sub return the NEW value (like __atomic_add_fetch).
 */
#ifndef RL_OS_H
#define RL_OS_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

#include <pthread.h>

/* ---- atomics ------------------------------------------------------------- */
#define RL_RELAXED __ATOMIC_RELAXED
#define RL_ACQUIRE __ATOMIC_ACQUIRE
#define RL_RELEASE __ATOMIC_RELEASE
#define RL_ACQ_REL __ATOMIC_ACQ_REL
#define rl_atomic_load(p, order) __atomic_load_n((p), (order))
#define rl_atomic_store(p, v, order) __atomic_store_n((p), (v), (order))
#define rl_atomic_add(p, v, order) __atomic_add_fetch((p), (v), (order))
#define rl_atomic_sub(p, v, order) __atomic_sub_fetch((p), (v), (order))

/* ---- clock, sleep ------------------------------------------------------ */
/* Nanoseconds / milliseconds from a monotonic clock (arbitrary epoch). */
long long rl_mono_ns(void);
long long rl_mono_ms(void);
void rl_sleep_ms(int ms);

/* ---- mutexes ------------------------------------------------------------- */
typedef pthread_mutex_t rl_mutex;
#define RL_MUTEX_INITIALIZER PTHREAD_MUTEX_INITIALIZER
static inline void rl_mutex_init(rl_mutex *m) { pthread_mutex_init(m, NULL); }
static inline void rl_mutex_destroy(rl_mutex *m) { pthread_mutex_destroy(m); }
static inline void rl_mutex_lock(rl_mutex *m) { pthread_mutex_lock(m); }
static inline void rl_mutex_unlock(rl_mutex *m) { pthread_mutex_unlock(m); }

/* ---- condition variables -------------------------------------------------- */
typedef pthread_cond_t rl_cond;
void rl_cond_init(rl_cond *cv);   /* on the monotonic clock where the OS allows */
static inline void rl_cond_destroy(rl_cond *cv) { pthread_cond_destroy(cv); }
static inline void rl_cond_broadcast(rl_cond *cv) { pthread_cond_broadcast(cv); }
static inline void rl_cond_wait(rl_cond *cv, rl_mutex *mu) { pthread_cond_wait(cv, mu); }

/* Wait on cv until woken or deadline_ms (rl_mono_ms() units; -1 = forever).
 * Returns 0 or ETIMEDOUT. */
int rl_cond_wait_until(rl_cond *cv, rl_mutex *mu, long long deadline_ms);

/* ---- threads -------------------------------------------------------------- */
typedef pthread_t rl_thread;
#define RL_THREAD_RESULT void *
#define RL_THREAD_CALL
typedef RL_THREAD_RESULT (RL_THREAD_CALL *rl_thread_fn)(void *);
int rl_thread_create(rl_thread *t, rl_thread_fn fn, void *arg);
void rl_thread_join(rl_thread t);

/* ---- sockets -------------------------------------------------------------- */
/* Close a socket descriptor (sockets are ints throughout csrc/). */
int rl_closesocket(int fd);

#endif
