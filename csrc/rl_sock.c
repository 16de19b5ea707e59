/* rl_sock.c -- socket helpers. See rl_sock.h.
 *
 * POSIX and Windows (Winsock 2) share this file; the differences are the
 * few helpers at the top (socket creation, options, non-blocking mode,
 * waiting) and the waker and same-host sections. Errors of socket calls are
 * read through rl_sock_errno() (rl_os.c maps Winsock codes to errno values),
 * so the logic below compares against errno constants on every OS. */
#if !defined(_WIN32)
#define _GNU_SOURCE
#endif
#include "rl_sock.h"
#include "rl_os.h"
#include "rl_frame.h"
#include "rl_poll.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
typedef WSAPOLLFD sys_pollfd;
#define S(fd) RL_SOCKET(fd)
#define SYS_POLLIN POLLRDNORM
#define SYS_POLLOUT POLLWRNORM
#else
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <ifaddrs.h>
#include <arpa/inet.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif
typedef struct pollfd sys_pollfd;
#define S(fd) (fd)
#define SYS_POLLIN POLLIN
#define SYS_POLLOUT POLLOUT
#endif

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0   /* macOS: SO_NOSIGPIPE is set in rl_sock_tune; Windows has no SIGPIPE */
#endif

/* ---- OS helpers ----------------------------------------------------------- */
/* socket(2) as an int, not inherited by child processes; -1 on failure. */
static int new_socket(int family, int type, int proto) {
#if defined(_WIN32)
    if (rl_net_init() != 0) return -1;
    SOCKET s = WSASocketW(family, type, proto, NULL, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (s == INVALID_SOCKET) { rl_sock_errno(); return -1; }
    return rl_fd_from_socket((uintptr_t)s);
#else
    return socket(family, type, proto);
#endif
}

static int set_opt(int fd, int level, int name, int value) {
    return setsockopt(S(fd), level, name, (const char *)&value, (socklen_t)sizeof value);
}

/* poll(2) / WSAPoll on n entries; -1 with rl_sock_errno() set on failure. */
static int sys_poll(sys_pollfd *p, int n, int timeout_ms) {
#if defined(_WIN32)
    if (n == 0) { rl_sleep_ms(timeout_ms < 0 ? 0x7fffffff : timeout_ms); return 0; }
    int r = WSAPoll(p, (ULONG)n, timeout_ms);
    if (r == SOCKET_ERROR) { rl_sock_errno(); return -1; }
    return r;
#else
    return poll(p, (nfds_t)n, timeout_ms);
#endif
}

long long rl_now_ms(void) { return rl_mono_ms(); }

static void set_nonblock_cloexec(int fd) {
#if defined(_WIN32)
    u_long one = 1;
    ioctlsocket(S(fd), FIONBIO, &one);
    SetHandleInformation((HANDLE)S(fd), HANDLE_FLAG_INHERIT, 0);
#else
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    fl = fcntl(fd, F_GETFD, 0);
    if (fl >= 0) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
#endif
}

void rl_sock_tune(int fd) {
    set_nonblock_cloexec(fd);
    /* TCP keeps the kernel's buffer autotuning: a fixed SO_RCVBUF turns it
     * off and caps the window, and two actors streaming trajectories into
     * one learner ran ~20% slower with 4 MiB than autotuned on loopback
     * (1 -> 1 the same). A local stream has no autotuning: it gets
     * RL_SOCK_BUF. */
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int is_tcp = getsockname(S(fd), (struct sockaddr *)&ss, &len) != 0 ||
                 ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
    if (is_tcp) {
        set_opt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    } else {
        set_opt(fd, SOL_SOCKET, SO_SNDBUF, RL_SOCK_BUF);
        set_opt(fd, SOL_SOCKET, SO_RCVBUF, RL_SOCK_BUF);
    }
#ifdef SO_NOSIGPIPE
    set_opt(fd, SOL_SOCKET, SO_NOSIGPIPE, 1);
#endif
}

static int resolve(const char *host, int port, int passive, struct addrinfo **res) {
    char ps[16];
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : AI_ADDRCONFIG;
    if (port < 0 || port > 65535) return RL_EINVAL;
    snprintf(ps, sizeof ps, "%d", port);
    if (host && !*host) host = NULL;
    if (rl_net_init() != 0) return RL_ESYS;
    int rc = getaddrinfo(host, ps, &hints, res);
    if (rc != 0 && !passive) {
        hints.ai_flags = 0;  /* AI_ADDRCONFIG hides ::1 on hosts without IPv6 routes */
        rc = getaddrinfo(host, ps, &hints, res);
    }
    return rc == 0 ? 0 : RL_EINVAL;
}

int rl_sock_bind(const char *host, int port, int *bound_port) {
    struct addrinfo *res, *ai;
    int rc = resolve(host, port, 1, &res);
    if (rc) return rc;
    /* With no host, prefer the IPv6 wildcard in dual-stack mode. */
    int err = RL_ESYS, fd = -1;
    for (int pass = 0; pass < 2 && fd < 0; pass++) {
        for (ai = res; ai; ai = ai->ai_next) {
            if ((host == NULL || !*host) && pass == 0 && ai->ai_family != AF_INET6) continue;
            fd = new_socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
            if (fd < 0) continue;
#if !defined(_WIN32)
            set_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1);   /* rebind despite TIME_WAIT */
#endif
            /* Windows: no option. Its SO_REUSEADDR lets another socket take
             * a port in use, and SO_EXCLUSIVEADDRUSE refuses a restarted
             * learner its port while old connections linger; the default
             * does neither (CPython's socket.create_server also sets
             * nothing there). */
            if (ai->ai_family == AF_INET6) set_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
            if (bind(S(fd), ai->ai_addr, (socklen_t)ai->ai_addrlen) == 0) break;
            err = rl_sock_errno() == EADDRINUSE ? RL_EADDRINUSE : RL_ESYS;
            rl_closesocket(fd);
            fd = -1;
            if (err == RL_EADDRINUSE) break;
        }
        if (err == RL_EADDRINUSE) break;
    }
    freeaddrinfo(res);
    if (fd < 0) return err;
    set_nonblock_cloexec(fd);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(S(fd), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

int rl_sock_start_listening(int fd) {
    return listen(S(fd), 1024) == 0 ? 0 : RL_ESYS;
}

int rl_sock_listen(const char *host, int port, int *bound_port) {
    int fd = rl_sock_bind(host, port, bound_port);
    if (fd >= 0 && rl_sock_start_listening(fd) != 0) {
        rl_closesocket(fd);
        return RL_ESYS;
    }
    return fd;
}

#if defined(_WIN32)
/* select(), not WSAPoll: before Windows 10 2004, WSAPoll never reports a
 * failed connect (it waits out the timeout); select() reports it in the
 * exception set, which is watched here whatever the caller asked for. */
static int wait_one(int fd, unsigned events, int timeout_ms) {
    fd_set r, w, x;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&x);
    if (events & RL_POLLIN) FD_SET(S(fd), &r);
    if (events & RL_POLLOUT) FD_SET(S(fd), &w);
    FD_SET(S(fd), &x);
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    int n = select(0, &r, &w, &x, timeout_ms < 0 ? NULL : &tv);
    if (n == SOCKET_ERROR) { rl_sock_errno(); return -1; }
    return n;
}
#else
static int wait_one(int fd, unsigned events, int timeout_ms) {
    struct pollfd pfd;
    pfd.fd = fd;
    pfd.events = (short)((events & RL_POLLIN ? POLLIN : 0) | (events & RL_POLLOUT ? POLLOUT : 0));
    return poll(&pfd, 1, timeout_ms);
}
#endif

int rl_sock_wait(int fd, unsigned events, int timeout_ms) {
    long long deadline = timeout_ms < 0 ? -1 : rl_now_ms() + timeout_ms;
    for (;;) {
        int left = deadline < 0 ? -1 : (int)(deadline - rl_now_ms());
        if (deadline >= 0 && left < 0) left = 0;
        int n = wait_one(fd, events, left);
        if (n > 0) return 0;
        if (n == 0) return RL_ETIMEDOUT;
        if (rl_sock_errno() != EINTR) return RL_ESYS;
    }
}

int rl_sock_poll_in(rl_pollin *set, int n, int timeout_ms) {
    sys_pollfd *pf = n > 0 ? calloc((size_t)n, sizeof *pf) : NULL;
    if (n > 0 && !pf) return RL_ESYS;
    int k = 0;
    for (int i = 0; i < n; i++) {   /* only live entries: WSAPoll may reject the rest */
        set[i].ready = 0;
        if (set[i].fd < 0) continue;
        pf[k].fd = S(set[i].fd);
        pf[k].events = SYS_POLLIN;
        k++;
    }
    int r = sys_poll(pf, k, timeout_ms);
    if (r < 0) {
        free(pf);
        return rl_sock_errno() == EINTR ? 0 : RL_ESYS;
    }
    int ready = 0;
    for (int i = 0, j = 0; i < n && r > 0; i++) {
        if (set[i].fd < 0) continue;
        if (pf[j++].revents) { set[i].ready = 1; ready++; }
    }
    free(pf);
    return ready;
}

void rl_sock_shutdown(int fd, int how) {
#if defined(_WIN32)
    shutdown(S(fd), how == RL_SHUT_WR ? SD_SEND : SD_BOTH);
#else
    shutdown(fd, how == RL_SHUT_WR ? SHUT_WR : SHUT_RDWR);
#endif
}

int rl_sock_unread(int fd) {
#if defined(_WIN32)
    u_long n = 0;
    if (ioctlsocket(S(fd), FIONREAD, &n) != 0) return -1;
    return n > 0x7fffffffu ? 0x7fffffff : (int)n;
#else
    int n = 0;
    if (ioctl(fd, FIONREAD, &n) != 0) return -1;
    return n;
#endif
}

int rl_sock_connect(const char *host, int port, int timeout_ms) {
    struct addrinfo *res, *ai;
    int rc = resolve(host, port, 0, &res);
    if (rc) return rc;
    long long deadline = rl_now_ms() + timeout_ms;
    int err = RL_ECONNREFUSED;
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = new_socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) continue;
        rl_sock_tune(fd);
        if (connect(S(fd), ai->ai_addr, (socklen_t)ai->ai_addrlen) == 0) { freeaddrinfo(res); return fd; }
        int e = rl_sock_errno();
#if defined(_WIN32)
        if (e == EWOULDBLOCK) e = EINPROGRESS;   /* Winsock's word for it */
#endif
        if (e == EINPROGRESS) {
            int left = (int)(deadline - rl_now_ms());
            if (left < 0) left = 0;
            if (rl_sock_wait(fd, RL_POLLOUT, left) == 0) {
                int so = 0;
                socklen_t sl = sizeof so;
                getsockopt(S(fd), SOL_SOCKET, SO_ERROR, (char *)&so, &sl);
                if (so == 0) { freeaddrinfo(res); return fd; }
                so = rl_sock_errno_from(so);   /* also sets errno */
                err = so == ECONNREFUSED ? RL_ECONNREFUSED : RL_ESYS;
            } else {
                err = RL_ETIMEDOUT;
            }
        } else {
            err = e == ECONNREFUSED ? RL_ECONNREFUSED : RL_ESYS;
        }
        rl_closesocket(fd);
    }
    freeaddrinfo(res);
    return err;
}

int rl_sock_accept(int lfd) {
    for (;;) {
#if defined(_WIN32)
        SOCKET s = accept(S(lfd), NULL, NULL);
        int fd = s == INVALID_SOCKET ? -1 : rl_fd_from_socket((uintptr_t)s);
#elif defined(__linux__)
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
        int fd = accept(lfd, NULL, NULL);
#endif
        if (fd >= 0) { rl_sock_tune(fd); return fd; }
        int e = rl_sock_errno();
        /* (Windows reports a connection reset while in the backlog as ECONNRESET) */
        if (e == EINTR || e == ECONNABORTED || e == ECONNRESET) continue;
        if (e == EAGAIN || e == EWOULDBLOCK) return RL_EAGAIN;
        return RL_ESYS;
    }
}

#if defined(_WIN32)
ssize_t rl_sock_writev(int fd, void *const *bases, const size_t *lens, int cnt) {
    WSABUF b[64];
    if (cnt > 64) cnt = 64;
    for (int i = 0; i < cnt; i++) {
        b[i].buf = bases[i];
        b[i].len = lens[i] > 0x40000000u ? 0x40000000u : (ULONG)lens[i];
        if (b[i].len != lens[i]) { cnt = i + 1; break; }   /* a partial write; the caller goes on */
    }
    for (;;) {
        DWORD sent = 0;
        if (WSASend(S(fd), b, (DWORD)cnt, &sent, 0, NULL, NULL) == 0) return (ssize_t)sent;
        int e = rl_sock_errno();
        if (e == EINTR) continue;
        if (e == EWOULDBLOCK) return RL_EAGAIN;
        return RL_ECONNLOST;
    }
}

ssize_t rl_sock_read(int fd, void *buf, size_t n) {
    for (;;) {
        int r = recv(S(fd), buf, n > 0x40000000u ? 0x40000000 : (int)n, 0);
        if (r >= 0) return r;
        int e = rl_sock_errno();
        if (e == EINTR) continue;
        if (e == EWOULDBLOCK) return RL_EAGAIN;
        return RL_ECONNLOST;
    }
}
#else
ssize_t rl_sock_writev(int fd, void *const *bases, const size_t *lens, int cnt) {
    struct iovec iov[64];
    struct msghdr mh;
    if (cnt > 64) cnt = 64;
    for (int i = 0; i < cnt; i++) { iov[i].iov_base = bases[i]; iov[i].iov_len = lens[i]; }
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = iov;
    mh.msg_iovlen = (size_t)cnt;
    for (;;) {
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return RL_EAGAIN;
        return RL_ECONNLOST;
    }
}

ssize_t rl_sock_read(int fd, void *buf, size_t n) {
    for (;;) {
        ssize_t r = recv(fd, buf, n, 0);
        if (r >= 0) return r;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return RL_EAGAIN;
        return RL_ECONNLOST;
    }
}

#endif

#if defined(_WIN32)
/* A connected pair of loopback TCP sockets. The accepted end must be the
 * one we connected (another local process could connect to the temporary
 * listener first): its address is checked against our connecting socket. */
int rl_waker_open(rl_waker *w) {
    struct sockaddr_in a, mine, theirs;
    int alen = sizeof a, mlen = sizeof mine, tlen = sizeof theirs;
    int l = new_socket(AF_INET, SOCK_STREAM, IPPROTO_TCP), c = -1, s = -1;
    w->rfd = w->wfd = -1;
    if (l < 0) return RL_ESYS;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    set_opt(l, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, 1);
    if (bind(S(l), (struct sockaddr *)&a, sizeof a) != 0 || listen(S(l), 1) != 0 ||
        getsockname(S(l), (struct sockaddr *)&a, &alen) != 0)
        goto fail;
    c = new_socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (c < 0 || connect(S(c), (struct sockaddr *)&a, sizeof a) != 0) goto fail;   /* blocking */
    if (getsockname(S(c), (struct sockaddr *)&mine, &mlen) != 0) goto fail;
    for (int tries = 0; tries < 8; tries++) {
        SOCKET as = accept(S(l), (struct sockaddr *)&theirs, &tlen);
        s = as == INVALID_SOCKET ? -1 : rl_fd_from_socket((uintptr_t)as);
        if (s < 0) goto fail;
        if (theirs.sin_port == mine.sin_port && theirs.sin_addr.s_addr == mine.sin_addr.s_addr) break;
        rl_closesocket(s);   /* a stranger */
        s = -1;
        tlen = sizeof theirs;
    }
    if (s < 0) goto fail;
    rl_closesocket(l);
    set_nonblock_cloexec(s);
    set_nonblock_cloexec(c);
    set_opt(c, IPPROTO_TCP, TCP_NODELAY, 1);
    w->rfd = s;
    w->wfd = c;
    return 0;
fail:
    rl_sock_errno();
    if (c >= 0) rl_closesocket(c);
    rl_closesocket(l);
    return RL_ESYS;
}

void rl_waker_wake(rl_waker *w) {
    char c = 1;
    send(S(w->wfd), &c, 1, 0);   /* a full buffer already means "awake" */
}

void rl_waker_drain(rl_waker *w) {
    char buf[64];
    while (recv(S(w->rfd), buf, sizeof buf, 0) > 0) {
    }
}

void rl_waker_close(rl_waker *w) {
    if (w->rfd >= 0) rl_closesocket(w->rfd);
    if (w->wfd >= 0) rl_closesocket(w->wfd);
    w->rfd = w->wfd = -1;
}
#else
int rl_waker_open(rl_waker *w) {
#ifdef __linux__
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return RL_ESYS;
    w->rfd = w->wfd = fd;
    return 0;
#else
    int p[2];
    if (pipe(p) < 0) return RL_ESYS;
    set_nonblock_cloexec(p[0]);
    set_nonblock_cloexec(p[1]);
    w->rfd = p[0];
    w->wfd = p[1];
    return 0;
#endif
}

void rl_waker_wake(rl_waker *w) {
#ifdef __linux__
    uint64_t one = 1;
    ssize_t r = write(w->wfd, &one, sizeof one);
#else
    char c = 1;
    ssize_t r = write(w->wfd, &c, 1);
#endif
    (void)r;  /* a full pipe / saturated counter already means "awake" */
}

void rl_waker_drain(rl_waker *w) {
    uint8_t buf[64];
    while (read(w->rfd, buf, sizeof buf) > 0) {
    }
}

void rl_waker_close(rl_waker *w) {
    if (w->rfd >= 0) close(w->rfd);
    if (w->wfd >= 0 && w->wfd != w->rfd) close(w->wfd);
    w->rfd = w->wfd = -1;
}
#endif

long long rl_sock_rtt_us(int fd) {
#if defined(__linux__) && defined(TCP_INFO)
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (fd >= 0 && getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
        len >= offsetof(struct tcp_info, tcpi_rtt) + sizeof ti.tcpi_rtt)
        return (long long)ti.tcpi_rtt;
#else
    (void)fd;
#endif
    return -1;
}

/* ---- same-host endpoints ------------------------------------------------ */
#if defined(_WIN32)
/* Windows 10 has AF_UNIX, but no abstract namespace, and rlink's same-host
 * path is a Linux optimisation: unsupported here, callers use TCP. */
int rl_sock_listen_local(const char *name, int abstract) {
    (void)name; (void)abstract;
    return RL_EINVAL;
}

int rl_sock_connect_local(const char *name, int abstract) {
    (void)name; (void)abstract;
    return RL_EINVAL;
}
#else
static int unix_addr(const char *name, int abstract, struct sockaddr_un *sa, socklen_t *len) {
    size_t n = strlen(name);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (n == 0 || n + 1 > sizeof sa->sun_path || n + 1 > RL_LOCAL_NAME_MAX) return RL_EINVAL;
    if (abstract) {
#ifdef __linux__
        memcpy(sa->sun_path + 1, name, n);   /* sun_path[0] = 0: abstract */
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
        return 0;
#else
        return RL_EINVAL;
#endif
    }
    memcpy(sa->sun_path, name, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int rl_sock_listen_local(const char *name, int abstract) {
    struct sockaddr_un sa;
    socklen_t len;
    if (unix_addr(name, abstract, &sa, &len)) return RL_EINVAL;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return RL_ESYS;
    if (bind(fd, (struct sockaddr *)&sa, len) != 0) {
        int e = errno, replaced = 0;
        if (e == EADDRINUSE && !abstract) {
            /* A socket file left by a process that died: take the path over
             * only if nobody accepts connections on it. */
            int probe = socket(AF_UNIX, SOCK_STREAM, 0);
            int alive = probe >= 0 && connect(probe, (struct sockaddr *)&sa, len) == 0;
            if (probe >= 0) close(probe);
            replaced = !alive && unlink(name) == 0 && bind(fd, (struct sockaddr *)&sa, len) == 0;
        }
        if (!replaced) {
            close(fd);
            errno = e;
            return e == EADDRINUSE ? RL_EADDRINUSE : RL_ESYS;
        }
    }
    if (listen(fd, 1024) != 0) { close(fd); return RL_ESYS; }
    set_nonblock_cloexec(fd);
    return fd;
}

int rl_sock_connect_local(const char *name, int abstract) {
    struct sockaddr_un sa;
    socklen_t len;
    if (unix_addr(name, abstract, &sa, &len)) return RL_EINVAL;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return RL_ESYS;
    rl_sock_tune(fd);
    for (;;) {
        if (connect(fd, (struct sockaddr *)&sa, len) == 0) return fd;
        if (errno != EINTR) break;
    }
    int e = errno;
    close(fd);
    errno = e;
    /* EAGAIN: the backlog is full; like ECONNREFUSED and ENOENT, "not here now" */
    return e == ECONNREFUSED || e == ENOENT || e == EAGAIN ? RL_ECONNREFUSED : RL_ESYS;
}
#endif

static void name_for(const struct sockaddr *a, int port, char out[RL_LOCAL_NAME_MAX]) {
    char ip[INET6_ADDRSTRLEN] = "";
    if (a->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, ip, sizeof ip);
        snprintf(out, RL_LOCAL_NAME_MAX, "rlink/%s:%d", ip, port);
    } else {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, ip, sizeof ip);
        snprintf(out, RL_LOCAL_NAME_MAX, "rlink/[%s]:%d", ip, port);
    }
}

int rl_sock_local_name(int lfd, char out[RL_LOCAL_NAME_MAX]) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(S(lfd), (struct sockaddr *)&ss, &sl) != 0) return RL_ESYS;
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) return RL_ESYS;
    int port = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                       : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    name_for((struct sockaddr *)&ss, port, out);
    return 0;
}

#ifdef __linux__
static int same_addr(const struct sockaddr *a, const struct sockaddr *b) {
    if (a->sa_family != b->sa_family) return 0;
    if (a->sa_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr, sizeof(struct in_addr)) == 0;
    if (a->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return 0;
}

static int is_this_machine(const struct sockaddr *a, struct ifaddrs *ifs) {
    if (a->sa_family == AF_INET &&
        (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127)
        return 1;
    if (a->sa_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)a)->sin6_addr))
        return 1;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next)
        if (i->ifa_addr && same_addr(a, i->ifa_addr)) return 1;
    return 0;
}

int rl_sock_local_candidates(const char *host, int port, char (*out)[RL_LOCAL_NAME_MAX], int max) {
    struct addrinfo *res;
    struct ifaddrs *ifs = NULL;
    if (max < 3 || resolve(host, port, 0, &res)) return 0;
    if (getifaddrs(&ifs) != 0) ifs = NULL;
    int k = 0, families = 0;
    for (struct addrinfo *ai = res; ai && k < max - 2; ai = ai->ai_next) {
        if (!is_this_machine(ai->ai_addr, ifs)) continue;
        families |= ai->ai_family == AF_INET ? 1 : 2;
        name_for(ai->ai_addr, port, out[k++]);
    }
    freeaddrinfo(res);
    if (ifs) freeifaddrs(ifs);
    if (k) {   /* a learner bound to a wildcard accepts on every local address */
        snprintf(out[k++], RL_LOCAL_NAME_MAX, "rlink/[::]:%d", port);
        if (families & 1) snprintf(out[k++], RL_LOCAL_NAME_MAX, "rlink/0.0.0.0:%d", port);
    }
    return k;
}
#else
int rl_sock_local_candidates(const char *host, int port, char (*out)[RL_LOCAL_NAME_MAX], int max) {
    (void)host; (void)port; (void)out; (void)max;
    return 0;   /* no abstract namespace: same-host peers use TCP */
}
#endif
