/* rl_sock.c -- socket helpers. See rl_sock.h. */
#define _GNU_SOURCE
#include "rl_sock.h"
#include "rl_os.h"
#include "rl_frame.h"
#include "rl_poll.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <ifaddrs.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0   /* macOS: SO_NOSIGPIPE is set in rl_sock_tune */
#endif

long long rl_now_ms(void) { return rl_mono_ms(); }

static void set_nonblock_cloexec(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    fl = fcntl(fd, F_GETFD, 0);
    if (fl >= 0) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

void rl_sock_tune(int fd) {
    int one = 1, buf = RL_SOCK_BUF;
    set_nonblock_cloexec(fd);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
#ifdef SO_NOSIGPIPE
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
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
    int rc = getaddrinfo(host, ps, &hints, res);
    if (rc != 0 && !passive) {
        hints.ai_flags = 0;  /* AI_ADDRCONFIG hides ::1 on hosts without IPv6 routes */
        rc = getaddrinfo(host, ps, &hints, res);
    }
    return rc == 0 ? 0 : RL_EINVAL;
}

int rl_sock_listen(const char *host, int port, int *bound_port) {
    struct addrinfo *res, *ai;
    int rc = resolve(host, port, 1, &res);
    if (rc) return rc;
    /* With no host, prefer the IPv6 wildcard in dual-stack mode. */
    int err = RL_ESYS, fd = -1;
    for (int pass = 0; pass < 2 && fd < 0; pass++) {
        for (ai = res; ai; ai = ai->ai_next) {
            if ((host == NULL || !*host) && pass == 0 && ai->ai_family != AF_INET6) continue;
            fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
            if (fd < 0) continue;
            int one = 1, zero = 0;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (ai->ai_family == AF_INET6)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
            if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0) break;
            err = errno == EADDRINUSE ? RL_EADDRINUSE : RL_ESYS;
            close(fd);
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
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

int rl_sock_wait(int fd, unsigned events, int timeout_ms) {
    struct pollfd pfd;
    pfd.fd = fd;
    pfd.events = (short)((events & RL_POLLIN ? POLLIN : 0) | (events & RL_POLLOUT ? POLLOUT : 0));
    long long deadline = timeout_ms < 0 ? -1 : rl_now_ms() + timeout_ms;
    for (;;) {
        int left = deadline < 0 ? -1 : (int)(deadline - rl_now_ms());
        if (deadline >= 0 && left < 0) left = 0;
        int n = poll(&pfd, 1, left);
        if (n > 0) return 0;
        if (n == 0) return RL_ETIMEDOUT;
        if (errno != EINTR) return RL_ESYS;
    }
}

int rl_sock_connect(const char *host, int port, int timeout_ms) {
    struct addrinfo *res, *ai;
    int rc = resolve(host, port, 0, &res);
    if (rc) return rc;
    long long deadline = rl_now_ms() + timeout_ms;
    int err = RL_ECONNREFUSED;
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) continue;
        rl_sock_tune(fd);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) { freeaddrinfo(res); return fd; }
        if (errno == EINPROGRESS) {
            int left = (int)(deadline - rl_now_ms());
            if (left < 0) left = 0;
            if (rl_sock_wait(fd, RL_POLLOUT, left) == 0) {
                int so = 0;
                socklen_t sl = sizeof so;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl);
                if (so == 0) { freeaddrinfo(res); return fd; }
                err = so == ECONNREFUSED ? RL_ECONNREFUSED : RL_ESYS;
                errno = so;
            } else {
                err = RL_ETIMEDOUT;
            }
        } else {
            err = errno == ECONNREFUSED ? RL_ECONNREFUSED : RL_ESYS;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return err;
}

int rl_sock_accept(int lfd) {
    for (;;) {
#ifdef __linux__
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
        int fd = accept(lfd, NULL, NULL);
#endif
        if (fd >= 0) { rl_sock_tune(fd); return fd; }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return RL_EAGAIN;
        return RL_ESYS;
    }
}

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
    if (getsockname(lfd, (struct sockaddr *)&ss, &sl) != 0) return RL_ESYS;
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
