/*
 * rl_poll.h -- a minimal readiness poller: epoll on Linux, poll() elsewhere,
 * WSAPoll on Windows.
 *
 * Thread safety: none; one poller belongs to one I/O thread, which is the
 * only caller of every function here.
 */
#ifndef RL_POLL_H
#define RL_POLL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { RL_POLLIN = 1, RL_POLLOUT = 2, RL_POLLERR = 4 };

typedef struct rl_poll_event {
    int fd;
    unsigned events;   /* RL_POLL* that are ready */
    void *ctx;         /* as registered */
} rl_poll_event;

typedef struct rl_poller rl_poller;

rl_poller *rl_poller_new(void);
void rl_poller_free(rl_poller *p);
/* Register fd, or change its interest set (events == 0 keeps it registered
 * but silent). ctx is returned with each of its events. */
int rl_poller_set(rl_poller *p, int fd, unsigned events, void *ctx);
int rl_poller_del(rl_poller *p, int fd);
/* Wait up to timeout_ms (-1 forever); returns the number of events written
 * (0 on timeout or EINTR) or a negative RL_E*. */
int rl_poller_wait(rl_poller *p, rl_poll_event *out, int max, int timeout_ms);
/* The same with a timeout in microseconds: kept to the microsecond by epoll
 * on Linux 5.11 and later (epoll_pwait2), rounded up to whole milliseconds
 * elsewhere. */
int rl_poller_wait_us(rl_poller *p, rl_poll_event *out, int max, long long timeout_us);

#ifdef __cplusplus
}
#endif
#endif
