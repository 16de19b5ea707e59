/*
 * rl_sock.h -- socket helpers: listen, connect, options, a wake-up channel.
 *
 * Every function is thread-safe (no shared state). Returned fds belong to the
 * caller. Errors are negative RL_E* codes; errno is left as the OS set it
 * (on Windows: the Winsock error mapped to an errno value, see rl_os.h).
 * Sockets are ints on every OS (rl_os.h says why that holds on Windows);
 * close them with rl_closesocket.
 */
#ifndef RL_SOCK_H
#define RL_SOCK_H

#include <stddef.h>
#include <sys/types.h>
#if defined(_MSC_VER) && !defined(HAVE_SSIZE_T) && !defined(RL_HAVE_SSIZE_T)
/* MSVC has no ssize_t. CPython's PC/pyconfig.h declares the same typedef
 * (__int64 on Win64) and HAVE_SSIZE_T; after Python.h it is already there. */
#define RL_HAVE_SSIZE_T
#include <basetsd.h>
typedef SSIZE_T ssize_t;
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Socket buffer size requested for local (AF_UNIX) data connections, which
 * have no autotuning; TCP connections keep the kernel's autotuning. */
#define RL_SOCK_BUF (4 << 20)

/* Bind to host:port (host NULL/"" = all interfaces, IPv6 dual stack where
 * available), not listening yet: connections are refused until
 * rl_sock_start_listening(fd). The fd is non-blocking and close-on-exec.
 * Returns the fd or RL_EADDRINUSE / RL_ESYS / RL_EINVAL (bad host). */
int rl_sock_bind(const char *host, int port, int *bound_port);
/* Start accepting connections on a bound fd: 0 or RL_ESYS. */
int rl_sock_start_listening(int fd);
/* Both: bind and listen. Returns the fd or an error as rl_sock_bind. */
int rl_sock_listen(const char *host, int port, int *bound_port);

/* Connect to host:port, trying every resolved address, each bounded by the
 * remaining time. Returns a connected non-blocking fd or RL_ECONNREFUSED,
 * RL_ETIMEDOUT, RL_EINVAL (unresolvable host), RL_ESYS. */
int rl_sock_connect(const char *host, int port, int timeout_ms);

/* Accept one connection (non-blocking); returns fd, RL_EAGAIN or RL_ESYS. */
int rl_sock_accept(int lfd);

/* Non-blocking, close-on-exec; TCP_NODELAY on TCP, RL_SOCK_BUF buffers on
 * AF_UNIX. */
void rl_sock_tune(int fd);

/* The kernel's smoothed round-trip time estimate for a connected TCP socket
 * in microseconds (TCP_INFO), or -1 where unavailable. */
long long rl_sock_rtt_us(int fd);

/* ---- same-host endpoints (AF_UNIX) --------------------------------------
 * A name is either a filesystem path (abstract = 0) or, on Linux, a name in
 * the abstract namespace (abstract = 1): no file, gone when the last fd
 * closes, even after SIGKILL. Names are at most RL_LOCAL_NAME_MAX - 1 bytes.
 * Not on Windows: listen/connect return RL_EINVAL there and
 * rl_sock_local_candidates finds none, so same-host peers use TCP. */
#define RL_LOCAL_NAME_MAX 96

/* Bind and listen. A filesystem path left behind by a dead process (nobody
 * accepts on it) is replaced. Returns the fd or RL_EADDRINUSE / RL_ESYS /
 * RL_EINVAL (name too long, or abstract names unsupported here). */
int rl_sock_listen_local(const char *name, int abstract);

/* Connect (never blocks: a full backlog counts as refused). Returns the fd or
 * RL_ECONNREFUSED / RL_EINVAL / RL_ESYS. */
int rl_sock_connect_local(const char *name, int abstract);

/* The abstract name under which a learner whose TCP listening socket is lfd
 * offers its same-host endpoint: "rlink/<ip>:<port>" ("[<ip6>]" for IPv6).
 * Returns 0 or RL_ESYS. */
int rl_sock_local_name(int lfd, char out[RL_LOCAL_NAME_MAX]);

/* The abstract names to try, in order, for reaching a learner at host:port
 * over AF_UNIX: for each address host resolves to that belongs to this
 * machine (loopback or one of its interfaces), its name, then the names of
 * the wildcard addresses. Returns how many were written (0: not local). */
int rl_sock_local_candidates(const char *host, int port, char (*out)[RL_LOCAL_NAME_MAX], int max);

/* Wait until fd is readable (RL_POLLIN) / writable (RL_POLLOUT), up to
 * timeout_ms. Returns 0, RL_ETIMEDOUT or RL_ESYS. */
int rl_sock_wait(int fd, unsigned events, int timeout_ms);

/* Wait up to timeout_ms until at least one socket of set[0..n) is readable
 * (data, end of stream or error); entries with fd < 0 are skipped. Sets each
 * entry's ready to 1 or 0. Returns the number ready, 0 on timeout (or a
 * signal), or RL_ESYS. */
typedef struct rl_pollin { int fd; int ready; } rl_pollin;
int rl_sock_poll_in(rl_pollin *set, int n, int timeout_ms);

/* shutdown(2): RL_SHUT_WR (send a FIN) or RL_SHUT_RDWR (also wakes a thread
 * blocked on the socket). */
enum { RL_SHUT_WR = 1, RL_SHUT_RDWR = 2 };
void rl_sock_shutdown(int fd, int how);

/* Bytes readable right now without blocking (FIONREAD), or -1 on error. */
int rl_sock_unread(int fd);

/* write/writev that never raise SIGPIPE. Return bytes written, RL_EAGAIN,
 * or RL_ECONNLOST. */
ssize_t rl_sock_writev(int fd, void *const *bases, const size_t *lens, int cnt);
/* Returns bytes read, 0 at EOF, RL_EAGAIN, or RL_ECONNLOST. */
ssize_t rl_sock_read(int fd, void *buf, size_t n);

/* Milliseconds from the monotonic clock: rl_mono_ns() / 1000000. */
long long rl_now_ms(void);

/* A wake-up channel for a poll loop: eventfd on Linux, a pipe elsewhere, a
 * connected pair of loopback TCP sockets on Windows (WSAPoll polls sockets
 * only). */
typedef struct rl_waker { int rfd, wfd; } rl_waker;
int rl_waker_open(rl_waker *w);
void rl_waker_wake(rl_waker *w);     /* thread-safe; async-signal-safe on POSIX */
void rl_waker_drain(rl_waker *w);
void rl_waker_close(rl_waker *w);

#ifdef __cplusplus
}
#endif
#endif
