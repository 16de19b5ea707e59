/* rl_shm.c -- same-host shared-memory regions. See rl_shm.h. */
#define _GNU_SOURCE   /* memfd_create, F_ADD_SEALS, madvise, MSG_CMSG_CLOEXEC */
#include "rl_shm.h"
#include "rl_frame.h"   /* RL_E* codes */
#include "rl_os.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

static size_t page_size(void) {
    static size_t ps;
    size_t v = rl_atomic_load(&ps, RL_RELAXED);
    if (!v) {
        long p = sysconf(_SC_PAGESIZE);
        v = p > 0 ? (size_t)p : 4096;
        rl_atomic_store(&ps, v, RL_RELAXED);
    }
    return v;
}

static size_t round_pages(size_t n) {
    size_t ps = page_size();
    return n > SIZE_MAX - ps ? 0 : (n + ps - 1) / ps * ps;
}

/* ------------------------------------------------------------------------ */
/* sender: the region and its slots                                          */
/* ------------------------------------------------------------------------ */
/* Slots are handed out in ring order (a "bip buffer"): after the newest
 * live slot, or, when that does not fit before the end, from offset 0 up
 * to the oldest live slot. live[] holds the live slots oldest first; a
 * release marks its slot and pops released slots off the front. */
typedef struct slot { uint64_t off, len; int released; } slot;

struct rl_shm_region {
    int fd;
    uint8_t *base;
    size_t size;
    rl_mutex mu;
    slot *live;                 /* ring of live slots, oldest at head */
    size_t cap, head, n;
    size_t in_use;
};

#if defined(__linux__)
rl_shm_region *rl_shm_create(size_t size) {
    size = round_pages(size ? size : 1);
    if (!size) { errno = EINVAL; return NULL; }
    int fd = memfd_create("rlink-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return NULL;
    if (ftruncate(fd, (off_t)size) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    rl_shm_region *r = calloc(1, sizeof *r);
    if (!r) {
        munmap(base, size);
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    r->fd = fd;
    r->base = base;
    r->size = size;
    rl_mutex_init(&r->mu);
    return r;
}
#else
rl_shm_region *rl_shm_create(size_t size) {
    (void)size;
    errno = ENOSYS;
    return NULL;
}
#endif

void rl_shm_destroy(rl_shm_region *r) {
    if (!r) return;
    munmap(r->base, r->size);
    close(r->fd);
    rl_mutex_destroy(&r->mu);
    free(r->live);
    free(r);
}

int rl_shm_fd(const rl_shm_region *r) { return r->fd; }
size_t rl_shm_size(const rl_shm_region *r) { return r->size; }
uint8_t *rl_shm_base(const rl_shm_region *r) { return r->base; }

static slot *live_at(rl_shm_region *r, size_t i) { return &r->live[(r->head + i) % r->cap]; }

int rl_shm_alloc(rl_shm_region *r, size_t len, uint64_t *off) {
    len = round_pages(len);
    if (!len || len > r->size) return -1;
    int rc = -1;
    rl_mutex_lock(&r->mu);
    uint64_t at;
    int fits = 0;
    if (r->n == 0) {
        at = 0;
        fits = 1;
    } else {
        uint64_t oldest = live_at(r, 0)->off;
        slot *newest = live_at(r, r->n - 1);
        uint64_t end = newest->off + newest->len;
        if (end > oldest) {           /* live data is [oldest, end): room after it, then before it */
            if (r->size - end >= len) { at = end; fits = 1; }
            else if (oldest >= len) { at = 0; fits = 1; }
        } else if (oldest - end >= len) {   /* wrapped: the gap is [end, oldest) */
            at = end;
            fits = 1;
        }
    }
    if (fits && r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        slot *v = malloc(cap * sizeof *v);
        if (v) {
            for (size_t i = 0; i < r->n; i++) v[i] = *live_at(r, i);
            free(r->live);
            r->live = v;
            r->cap = cap;
            r->head = 0;
        } else {
            fits = 0;
        }
    }
    if (fits) {
        *live_at(r, r->n) = (slot){at, len, 0};
        r->n++;
        r->in_use += len;
        *off = at;
        rc = 0;
    }
    rl_mutex_unlock(&r->mu);
    return rc;
}

int rl_shm_release(rl_shm_region *r, uint64_t off) {
    int rc = -1;
    rl_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++) {
        slot *s = live_at(r, i);
        if (s->off == off && !s->released) {
            s->released = 1;
            r->in_use -= s->len;
            rc = 0;
            break;
        }
    }
    while (r->n && live_at(r, 0)->released) {
        r->head = (r->head + 1) % r->cap;
        r->n--;
    }
    if (r->n == 0) r->head = 0;
    rl_mutex_unlock(&r->mu);
    return rc;
}

size_t rl_shm_in_use(rl_shm_region *r) {
    rl_mutex_lock(&r->mu);
    size_t v = r->in_use;
    rl_mutex_unlock(&r->mu);
    return v;
}

/* ------------------------------------------------------------------------ */
/* receiver: a private mapping                                                */
/* ------------------------------------------------------------------------ */
struct rl_shm_map {
    long refs;      /* atomic */
    uint8_t *base;
    uint64_t size;
};

rl_shm_map *rl_shm_map_fd(int fd, uint64_t expect_size, const char **why) {
    const char *problem = NULL;
    rl_shm_map *m = NULL;
#if defined(__linux__)
    struct stat st;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) {
        problem = "shared memory: the descriptor is not a sealable memory file";
    } else if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
        problem = "shared memory: the region is not sealed against resizing";
    } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        problem = "shared memory: the descriptor is not a memory file";
    } else if (expect_size == 0 || (uint64_t)st.st_size != expect_size ||
               expect_size % page_size() != 0 || expect_size > SIZE_MAX) {
        problem = "shared memory: the region's size is not the size offered";
    } else {
        void *base = mmap(NULL, (size_t)expect_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (base == MAP_FAILED) {
            problem = "shared memory: could not map the region";
        } else if (!(m = malloc(sizeof *m))) {
            munmap(base, (size_t)expect_size);
            problem = "out of memory";
        } else {
            m->refs = 1;
            m->base = base;
            m->size = expect_size;
        }
    }
#else
    (void)expect_size;
    problem = "shared memory is not supported on this platform";
#endif
    close(fd);
    if (why) *why = problem;
    return m;
}

rl_shm_map *rl_shm_map_ref(rl_shm_map *m) {
    rl_atomic_add(&m->refs, 1, RL_RELAXED);
    return m;
}

void rl_shm_map_unref(rl_shm_map *m) {
    if (!m || rl_atomic_sub(&m->refs, 1, RL_ACQ_REL) != 0) return;
    munmap(m->base, (size_t)m->size);
    free(m);
}

uint8_t *rl_shm_map_base(const rl_shm_map *m) { return m->base; }
uint64_t rl_shm_map_size(const rl_shm_map *m) { return m->size; }

void rl_shm_map_forget(rl_shm_map *m, uint64_t off, uint64_t len) {
    size_t ps = page_size();
    if (off >= m->size || len == 0) return;
    off -= off % ps;
    if (len > m->size - off) len = m->size - off;
    len = (len + ps - 1) / ps * ps;
    if (len > m->size - off) len = m->size - off;
#if defined(__linux__)
    /* on a private file mapping: drop the copy-on-write pages */
    madvise(m->base + off, (size_t)len, MADV_DONTNEED);
#endif
}

/* ------------------------------------------------------------------------ */
/* descriptors over AF_UNIX                                                   */
/* ------------------------------------------------------------------------ */
ssize_t rl_sock_write_fd(int sock, const void *p, size_t n, int fd) {
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec io = {(void *)p, n};
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof ctl.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    for (;;) {
        ssize_t w = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (w >= 0) return w;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return RL_EAGAIN;
        return RL_ECONNLOST;
    }
}

ssize_t rl_sock_read_fds(int sock, void *buf, size_t n, int *fds, int max, int *nfds) {
    /* room for max descriptors and a few more, to tell "too many" */
    union { struct cmsghdr h; char buf[CMSG_SPACE(8 * sizeof(int))]; } ctl;
    struct iovec io = {buf, n};
    struct msghdr msg;
    int flags = 0;
#ifdef MSG_CMSG_CLOEXEC
    flags |= MSG_CMSG_CLOEXEC;
#endif
    *nfds = 0;
    for (;;) {
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = &io;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof ctl.buf;
        ssize_t r = recvmsg(sock, &msg, flags);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return RL_EAGAIN;
            return RL_ECONNLOST;
        }
        int got = 0, extra = (msg.msg_flags & MSG_CTRUNC) != 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
#ifndef MSG_CMSG_CLOEXEC
                fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
                if (got < max) fds[got++] = fd;
                else { close(fd); extra = 1; }
            }
        }
        if (extra) {
            for (int i = 0; i < got; i++) close(fds[i]);
            *nfds = max + 1;
        } else {
            *nfds = got;
        }
        return r;
    }
}
