/* rl_poll.c -- epoll (Linux), poll() (portable fallback) or WSAPoll
 * (Windows: the same code as the poll() fallback). See rl_poll.h. */
#if !defined(_WIN32)
#define _GNU_SOURCE
#endif
#include "rl_poll.h"
#include "rl_frame.h"
#include "rl_os.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#if !defined(_WIN32)
#include <unistd.h>
#endif

#if defined(__linux__) && !defined(RL_FORCE_POLL)
/* ------------------------------------------------------------------------ */
/* epoll                                                                      */
/* ------------------------------------------------------------------------ */
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441   /* Linux 5.11, the same number on every architecture */
#endif

typedef struct { int fd; unsigned events; void *ctx; int used; } slot;

struct rl_poller {
    int ep;
    slot *slots;      /* indexed by fd */
    int nslots;
    struct epoll_event evs[256];
};

rl_poller *rl_poller_new(void) {
    rl_poller *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->ep = epoll_create1(EPOLL_CLOEXEC);
    if (p->ep < 0) { free(p); return NULL; }
    return p;
}

void rl_poller_free(rl_poller *p) {
    if (!p) return;
    close(p->ep);
    free(p->slots);
    free(p);
}

static unsigned to_ep(unsigned e) {
    return (e & RL_POLLIN ? EPOLLIN : 0u) | (e & RL_POLLOUT ? EPOLLOUT : 0u);
}

int rl_poller_set(rl_poller *p, int fd, unsigned events, void *ctx) {
    if (fd < 0) return RL_EINVAL;
    if (fd >= p->nslots) {
        int n = p->nslots ? p->nslots : 64;
        while (n <= fd) n *= 2;
        slot *s = realloc(p->slots, (size_t)n * sizeof *s);
        if (!s) return RL_ENOMEM;
        memset(s + p->nslots, 0, (size_t)(n - p->nslots) * sizeof *s);
        p->slots = s;
        p->nslots = n;
    }
    slot *s = &p->slots[fd];
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = to_ep(events);
    ev.data.fd = fd;
    if (!s->used) {
        if (epoll_ctl(p->ep, EPOLL_CTL_ADD, fd, &ev) < 0) return RL_ESYS;
    } else if (s->events != events) {
        if (epoll_ctl(p->ep, EPOLL_CTL_MOD, fd, &ev) < 0) return RL_ESYS;
    }
    s->used = 1;
    s->fd = fd;
    s->events = events;
    s->ctx = ctx;
    return 0;
}

int rl_poller_del(rl_poller *p, int fd) {
    if (fd < 0 || fd >= p->nslots || !p->slots[fd].used) return RL_EINVAL;
    epoll_ctl(p->ep, EPOLL_CTL_DEL, fd, NULL);
    p->slots[fd].used = 0;
    return 0;
}

static int no_pwait2;   /* the kernel said ENOSYS (before 5.11): whole milliseconds */

int rl_poller_wait_us(rl_poller *p, rl_poll_event *out, int max, long long timeout_us) {
    if (max > 256) max = 256;
    int n = -1;
    if (timeout_us > 0 && timeout_us % 1000 && !rl_atomic_load(&no_pwait2, RL_RELAXED)) {
        /* called through syscall(): glibc has a wrapper only since 2.35 */
        struct timespec ts = {(time_t)(timeout_us / 1000000), (long)(timeout_us % 1000000) * 1000};
        n = (int)syscall(SYS_epoll_pwait2, p->ep, p->evs, max, &ts, NULL, 0);
        if (n < 0 && errno == ENOSYS) rl_atomic_store(&no_pwait2, 1, RL_RELAXED);
        else if (n < 0) return errno == EINTR ? 0 : RL_ESYS;
    }
    if (n < 0) {
        int ms = timeout_us < 0 ? -1 : (int)((timeout_us + 999) / 1000);
        n = epoll_wait(p->ep, p->evs, max, ms);
    }
    if (n < 0) return errno == EINTR ? 0 : RL_ESYS;
    int k = 0;
    for (int i = 0; i < n; i++) {
        int fd = p->evs[i].data.fd;
        if (fd < 0 || fd >= p->nslots || !p->slots[fd].used) continue;
        unsigned e = p->evs[i].events, r = 0;
        if (e & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) r |= RL_POLLIN;
        if (e & EPOLLOUT) r |= RL_POLLOUT;
        if (e & EPOLLERR) r |= RL_POLLERR | RL_POLLIN;
        out[k].fd = fd;
        out[k].events = r;
        out[k].ctx = p->slots[fd].ctx;
        k++;
    }
    return k;
}

#else
/* ------------------------------------------------------------------------ */
/* poll() fallback; WSAPoll on Windows                                        */
/* ------------------------------------------------------------------------ */
#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
typedef WSAPOLLFD sys_pollfd;
#define FD_OF(pfd) ((int)(intptr_t)(pfd).fd)
#define TO_FD(fd) RL_SOCKET(fd)
/* WSAPoll: POLLIN includes POLLRDBAND, which some providers reject */
#define SYS_POLLIN POLLRDNORM
#define SYS_POLLOUT POLLWRNORM
static int sys_poll(sys_pollfd *p, int n, int timeout_ms) {
    if (n == 0) { rl_sleep_ms(timeout_ms < 0 ? 0x7fffffff : timeout_ms); return 0; }   /* WSAPoll rejects n == 0 */
    int r = WSAPoll(p, (ULONG)n, timeout_ms);
    if (r == SOCKET_ERROR) { rl_sock_errno(); return -1; }
    return r;
}
#else
#include <poll.h>
typedef struct pollfd sys_pollfd;
#define FD_OF(pfd) ((pfd).fd)
#define TO_FD(fd) (fd)
#define SYS_POLLIN POLLIN
#define SYS_POLLOUT POLLOUT
static int sys_poll(sys_pollfd *p, int n, int timeout_ms) { return poll(p, (nfds_t)n, timeout_ms); }
#endif

struct rl_poller {
    sys_pollfd *pfds;
    void **ctxs;
    int n, cap;
};

rl_poller *rl_poller_new(void) { return calloc(1, sizeof(rl_poller)); }

void rl_poller_free(rl_poller *p) {
    if (!p) return;
    free(p->pfds);
    free(p->ctxs);
    free(p);
}

static int find(rl_poller *p, int fd) {
    for (int i = 0; i < p->n; i++) if (FD_OF(p->pfds[i]) == fd) return i;
    return -1;
}

int rl_poller_set(rl_poller *p, int fd, unsigned events, void *ctx) {
    if (fd < 0) return RL_EINVAL;
    int i = find(p, fd);
    if (i < 0) {
        if (p->n == p->cap) {
            int cap = p->cap ? p->cap * 2 : 64;
            sys_pollfd *f = realloc(p->pfds, (size_t)cap * sizeof *f);
            if (!f) return RL_ENOMEM;
            p->pfds = f;
            void **c = realloc(p->ctxs, (size_t)cap * sizeof *c);
            if (!c) return RL_ENOMEM;
            p->ctxs = c;
            p->cap = cap;
        }
        i = p->n++;
        p->pfds[i].fd = TO_FD(fd);
    }
    p->pfds[i].events = (short)((events & RL_POLLIN ? SYS_POLLIN : 0) | (events & RL_POLLOUT ? SYS_POLLOUT : 0));
    p->pfds[i].revents = 0;
    p->ctxs[i] = ctx;
    return 0;
}

int rl_poller_del(rl_poller *p, int fd) {
    int i = find(p, fd);
    if (i < 0) return RL_EINVAL;
    p->n--;
    p->pfds[i] = p->pfds[p->n];
    p->ctxs[i] = p->ctxs[p->n];
    return 0;
}

int rl_poller_wait_us(rl_poller *p, rl_poll_event *out, int max, long long timeout_us) {
    int n = sys_poll(p->pfds, p->n, timeout_us < 0 ? -1 : (int)((timeout_us + 999) / 1000));
    if (n < 0) return rl_sock_errno() == EINTR ? 0 : RL_ESYS;
    int k = 0;
    for (int i = 0; i < p->n && k < max; i++) {
        short e = p->pfds[i].revents;
        if (!e) continue;
        unsigned r = 0;
        if (e & (SYS_POLLIN | POLLHUP)) r |= RL_POLLIN;
        if (e & SYS_POLLOUT) r |= RL_POLLOUT;
        if (e & (POLLERR | POLLNVAL)) r |= RL_POLLERR | RL_POLLIN;
        out[k].fd = FD_OF(p->pfds[i]);
        out[k].events = r;
        out[k].ctx = p->ctxs[i];
        k++;
    }
    return k;
}
#endif

int rl_poller_wait(rl_poller *p, rl_poll_event *out, int max, int timeout_ms) {
    return rl_poller_wait_us(p, out, max, timeout_ms < 0 ? -1 : timeout_ms * 1000LL);
}
