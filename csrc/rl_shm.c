/* rl_shm.c -- same-host shared-memory regions, their slot allocator, maps of a peer's region, and descriptor passing. See rl_shm.h. */
#define _GNU_SOURCE
#include "rl_shm.h"
#include "rl_frame.h"
#include "rl_os.h"

#include <errno.h>

#ifdef _WIN32
/* No sealable anonymous memory files and no descriptor passing: a region
 * can never be made or mapped, so callers always use the socket. */
rl_shm_region *rl_shm_create(size_t size) { (void)size; errno = ENOSYS; return NULL; }
void rl_shm_destroy(rl_shm_region *r) { (void)r; }
int rl_shm_fd(const rl_shm_region *r) { (void)r; return -1; }
size_t rl_shm_size(const rl_shm_region *r) { (void)r; return 0; }
uint8_t *rl_shm_base(const rl_shm_region *r) { (void)r; return NULL; }
int rl_shm_alloc(rl_shm_region *r, size_t len, uint64_t *off) { (void)r; (void)len; (void)off; return -1; }
int rl_shm_release(rl_shm_region *r, uint64_t off) { (void)r; (void)off; return -1; }
size_t rl_shm_in_use(rl_shm_region *r) { (void)r; return 0; }
rl_shm_map *rl_shm_map_fd(int fd, uint64_t expect_size, int copy_on_write, const char **why) {
    (void)fd; (void)expect_size; (void)copy_on_write;
    if (why) *why = "shared memory: not supported on this platform";
    return NULL;
}
void rl_shm_map_discard(rl_shm_map *m, uint64_t off, uint64_t len) { (void)m; (void)off; (void)len; }
rl_shm_map *rl_shm_map_ref(rl_shm_map *m) { return m; }
void rl_shm_map_unref(rl_shm_map *m) { (void)m; }
uint8_t *rl_shm_map_base(const rl_shm_map *m) { (void)m; return NULL; }
uint64_t rl_shm_map_size(const rl_shm_map *m) { (void)m; return 0; }
int rl_shm_map_holds(const rl_shm_map *m, uint64_t off, uint64_t len) { (void)m; (void)off; (void)len; return 0; }
void rl_shm_close_fd(int fd) { (void)fd; }
ssize_t rl_sock_write_fd(int sock, const void *p, size_t n, int fd) {
    (void)sock; (void)p; (void)n; (void)fd;
    return RL_ECONNLOST;
}
ssize_t rl_sock_read_fds(int sock, void *buf, size_t n, int *fds, int max, int *nfds) {
    (void)sock; (void)buf; (void)n; (void)fds; (void)max;
    *nfds = 0;
    return RL_ECONNLOST;
}
#else
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/syscall.h>
#ifndef MFD_CLOEXEC   /* glibc < 2.27 has neither the wrapper nor the flags */
#define MFD_CLOEXEC 0x0001U
#define MFD_ALLOW_SEALING 0x0002U
#define memfd_create(name, flags) ((int)syscall(SYS_memfd_create, (name), (flags)))
#endif
#ifndef MFD_NOEXEC_SEAL   /* Linux 6.3 */
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef F_ADD_SEALS   /* same: the values are the kernel ABI (linux/fcntl.h) */
#define F_ADD_SEALS 1033
#define F_GET_SEALS 1034
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#endif
#endif

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0   /* macOS: SO_NOSIGPIPE is set in rl_sock_tune */
#endif

#ifdef __linux__
static size_t page_size(void) {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}
#endif

/* ------------------------------------------------------------------------ */
/* region and slot allocator                                                  */
/* ------------------------------------------------------------------------ */
/* Live slots form a FIFO in ring order (q is circular: head, n of cap).
 * A slot stays in the FIFO after its release until every older slot is
 * released too, so that the free space is always one or two runs: after
 * the newest slot, and (when not wrapped) before the oldest. Slots never
 * overlap and are at least one page, so n <= size / page. */
typedef struct shm_slot {
    uint64_t off, len;
    int released;
} shm_slot;

struct rl_shm_region {
    rl_mutex mu;
    int fd;
    uint8_t *base;
    size_t size, page;
    shm_slot *q;
    size_t cap, head, n;
    size_t in_use;
};

#ifdef __linux__
rl_shm_region *rl_shm_create(size_t size) {
    size_t page = page_size();
    if (size == 0 || size > SIZE_MAX - page) { errno = EINVAL; return NULL; }
    size = (size + page - 1) / page * page;
    if ((uint64_t)size > (uint64_t)INT64_MAX) { errno = EINVAL; return NULL; }  /* off_t */
    rl_shm_region *r = calloc(1, sizeof *r);
    if (!r) { errno = ENOMEM; return NULL; }
    /* Never executable: also what vm.memfd_noexec=2 demands. Kernels before
     * 6.3 refuse the unknown flag with EINVAL; then ask without it. */
    int fd = memfd_create("rlink-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
    if (fd < 0 && errno == EINVAL) fd = memfd_create("rlink-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) goto fail;
    /* The seals are what lets the peer trust the size: without them we could
     * shrink the file under its map and fault it with SIGBUS. */
    if (ftruncate(fd, (off_t)size) != 0) goto fail_fd;
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) goto fail_fd;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) goto fail_fd;
    rl_mutex_init(&r->mu);
    r->fd = fd;
    r->base = p;
    r->size = size;
    r->page = page;
    return r;
fail_fd:;
    int e = errno;
    close(fd);
    errno = e;
fail:
    free(r);
    return NULL;
}
#else
rl_shm_region *rl_shm_create(size_t size) {
    (void)size;
    errno = ENOSYS;   /* no sealable anonymous memory files: use the socket */
    return NULL;
}
#endif

void rl_shm_destroy(rl_shm_region *r) {
    if (!r) return;
    /* A peer's map keeps the memory: the file lives until its last user. */
    munmap(r->base, r->size);
    close(r->fd);
    rl_mutex_destroy(&r->mu);
    free(r->q);
    free(r);
}

int rl_shm_fd(const rl_shm_region *r) { return r->fd; }
size_t rl_shm_size(const rl_shm_region *r) { return r->size; }
uint8_t *rl_shm_base(const rl_shm_region *r) { return r->base; }

static shm_slot *slot_at(rl_shm_region *r, size_t i) { return &r->q[(r->head + i) % r->cap]; }

/* Make room for one more FIFO entry; unrolls the ring so head is 0. */
static int fifo_grow(rl_shm_region *r) {
    size_t cap = r->cap ? r->cap * 2 : 8;
    size_t most = r->size / r->page;
    if (cap > most) cap = most;
    if (cap <= r->n) return -1;   /* cannot happen: a free page means n < most */
    shm_slot *q = malloc(cap * sizeof *q);
    if (!q) return -1;
    for (size_t i = 0; i < r->n; i++) q[i] = *slot_at(r, i);
    free(r->q);
    r->q = q;
    r->cap = cap;
    r->head = 0;
    return 0;
}

int rl_shm_alloc(rl_shm_region *r, size_t len, uint64_t *off) {
    if (len == 0 || len > r->size) return -1;
    uint64_t need = (len + r->page - 1) / r->page * r->page;  /* no overflow: size is whole pages */
    int rc = -1;
    rl_mutex_lock(&r->mu);
    uint64_t at;
    if (r->n == 0) {
        at = 0;
    } else {
        const shm_slot *old = slot_at(r, 0), *nw = slot_at(r, r->n - 1);
        uint64_t end = nw->off + nw->len;
        if (nw->off >= old->off) {   /* free: [end, size) and [0, old->off) */
            if (need <= r->size - end) at = end;
            else if (need <= old->off) at = 0;
            else goto out;
        } else {                     /* wrapped: free is [end, old->off) */
            if (need <= old->off - end) at = end;
            else goto out;
        }
    }
    if (r->n == r->cap && fifo_grow(r) != 0) goto out;
    shm_slot *s = slot_at(r, r->n++);
    s->off = at;
    s->len = need;
    s->released = 0;
    r->in_use += (size_t)need;
    *off = at;
    rc = 0;
out:
    rl_mutex_unlock(&r->mu);
    return rc;
}

int rl_shm_release(rl_shm_region *r, uint64_t off) {
    int rc = -1;
    rl_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++) {
        shm_slot *s = slot_at(r, i);
        if (s->off != off) continue;
        if (s->released) break;      /* released twice */
        s->released = 1;
        r->in_use -= (size_t)s->len;
        rc = 0;
        break;
    }
    /* Pop released slots from the front: their space is free again. */
    while (rc == 0 && r->n && slot_at(r, 0)->released) {
        r->head = (r->head + 1) % r->cap;
        r->n--;
    }
    if (r->n == 0) r->head = 0;
    rl_mutex_unlock(&r->mu);
    return rc;
}

size_t rl_shm_in_use(rl_shm_region *r) {
    rl_mutex_lock(&r->mu);
    size_t n = r->in_use;
    rl_mutex_unlock(&r->mu);
    return n;
}

/* ------------------------------------------------------------------------ */
/* receiver maps                                                              */
/* ------------------------------------------------------------------------ */
struct rl_shm_map {
    uint8_t *base;
    uint64_t size;
    long refs;
    int copy_on_write;
};

static rl_shm_map *map_fail(int fd, const char **why, const char *reason) {
    if (fd >= 0) close(fd);
    if (why) *why = reason;
    return NULL;
}

#ifdef __linux__
rl_shm_map *rl_shm_map_fd(int fd, uint64_t expect_size, int copy_on_write, const char **why) {
    if (fd < 0) return map_fail(fd, why, "shared memory: no descriptor");
    /* Seals first: once SHRINK and GROW are on they cannot come off, so the
     * size read after them is the size for good. */
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) return map_fail(fd, why, "shared memory: not a sealable memory file");
    if (!(seals & F_SEAL_SHRINK)) return map_fail(fd, why, "shared memory: not sealed against shrinking");
    if (!(seals & F_SEAL_GROW)) return map_fail(fd, why, "shared memory: not sealed against growing");
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return map_fail(fd, why, "shared memory: not a memory file");
    uint64_t size = (uint64_t)st.st_size;
    if (st.st_size <= 0) return map_fail(fd, why, "shared memory: empty region");
    if (size != expect_size) return map_fail(fd, why, "shared memory: size differs from the announced size");
    if (size % page_size() != 0) return map_fail(fd, why, "shared memory: size is not whole pages");
    if (size > SIZE_MAX) return map_fail(fd, why, "shared memory: region too large to map");
    rl_shm_map *m = malloc(sizeof *m);
    if (!m) return map_fail(fd, why, "shared memory: out of memory");
    /* Shared: the slot is the receiver's until it releases it (rl_shm.h);
     * private when other receivers read the same slots. */
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE,
                   copy_on_write ? MAP_PRIVATE : MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { free(m); return map_fail(fd, why, "shared memory: mmap failed"); }
    close(fd);   /* the mapping keeps the file */
    m->base = p;
    m->size = size;
    m->refs = 1;
    m->copy_on_write = copy_on_write != 0;
    return m;
}
#else
rl_shm_map *rl_shm_map_fd(int fd, uint64_t expect_size, int copy_on_write, const char **why) {
    (void)expect_size; (void)copy_on_write;
    /* Without seals we cannot trust the size (SIGBUS on a shrunk file). */
    return map_fail(fd, why, "shared memory: not supported on this platform");
}
#endif

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

#ifdef __linux__
/* This process's /proc/self/pagemap, opened once (and again in a forked
 * child: an inherited descriptor would read the parent's pages). */
static rl_mutex pagemap_mu = RL_MUTEX_INITIALIZER;
static int pagemap_guarded;   /* rl_fork_guard(&pagemap_mu) done */
static int pagemap_fd = -1;
static pid_t pagemap_pid;

/* Whether this process wrote into [p, p + n) (whole pages) of a private
 * file mapping: some page there is an anonymous copy (pagemap: present,
 * bit 63, or swapped, bit 62, without bit 61 "file page"). 1 yes, 0 no,
 * -1 unknown (no pagemap). One pread per 512 pages. */
static int written_here(const uint8_t *p, size_t n) {
    size_t pg = page_size(), npages = n / pg;
    uint64_t e[512];
    int rc = 0;
    rl_mutex_lock_forksafe(&pagemap_mu, &pagemap_guarded);   /* never inherited locked by a child */
    pid_t pid = getpid();
    if (pagemap_fd < 0 || pagemap_pid != pid) {
        if (pagemap_fd >= 0) close(pagemap_fd);
        pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        pagemap_pid = pid;
    }
    for (size_t i = 0; i < npages && rc == 0;) {
        size_t k = npages - i < 512 ? npages - i : 512;
        off_t at = (off_t)(((uintptr_t)p / pg + i) * sizeof e[0]);
        if (pagemap_fd < 0 || pread(pagemap_fd, e, k * sizeof e[0], at) != (ssize_t)(k * sizeof e[0])) {
            rc = -1;
            break;
        }
        for (size_t j = 0; j < k && rc == 0; j++)
            if ((e[j] >> 62) != 0 && !(e[j] >> 61 & 1)) rc = 1;
        i += k;
    }
    rl_mutex_unlock(&pagemap_mu);
    return rc;
}
#endif

void rl_shm_map_discard(rl_shm_map *m, uint64_t off, uint64_t len) {
#ifndef __linux__
    (void)m; (void)off; (void)len;   /* no map can exist: rl_shm_map_fd fails */
#else
    if (!m || !m->copy_on_write || !rl_shm_map_holds(m, off, len) || len == 0) return;
    size_t pg = page_size();
    uint64_t end = (off + len + pg - 1) / pg * pg;   /* holds: off + len <= size */
    if (end > m->size) end = m->size;                 /* size is whole pages */
    /* Drops our private copies of written pages; the next read maps the
     * file's pages again, which hold whatever the owner wrote since. Pages
     * only read still show the file, owner's later writes included: left
     * mapped, they cost no page faults on the slot's next use. */
    if (written_here(m->base + off, (size_t)(end - off)) != 0)
        (void)madvise(m->base + off, (size_t)(end - off), MADV_DONTNEED);
#endif
}

int rl_shm_map_holds(const rl_shm_map *m, uint64_t off, uint64_t len) {
#ifdef __linux__
    return off % page_size() == 0 && off <= m->size && len <= m->size - off;
#else
    (void)m; (void)off; (void)len;   /* no map can exist: rl_shm_map_fd fails */
    return 0;
#endif
}

/* ------------------------------------------------------------------------ */
/* descriptor passing (SCM_RIGHTS, POSIX)                                     */
/* ------------------------------------------------------------------------ */
void rl_shm_close_fd(int fd) {
    if (fd >= 0) close(fd);
}

ssize_t rl_sock_write_fd(int sock, const void *p, size_t n, int fd) {
    /* A stream socket sends nothing for 0 bytes, so the fd could not go. */
    if (n == 0) return 0;
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } cb;
    struct iovec iov;
    struct msghdr mh;
    iov.iov_base = (void *)p;
    iov.iov_len = n;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (fd >= 0) {
        memset(&cb, 0, sizeof cb);
        mh.msg_control = cb.buf;
        mh.msg_controllen = sizeof cb.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    for (;;) {
        ssize_t w = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (w >= 0) return w;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return RL_EAGAIN;
        return RL_ECONNLOST;
    }
}

#define FDS_STACK 16   /* control buffer on the stack for up to this many fds */

ssize_t rl_sock_read_fds(int sock, void *buf, size_t n, int *fds, int max, int *nfds) {
    if (max < 0) max = 0;
    *nfds = 0;
    /* Room for max + 1: one more than allowed tells "too many" apart from
     * "exactly max"; anything beyond that the kernel drops (MSG_CTRUNC). */
    size_t space = CMSG_SPACE(sizeof(int) * ((size_t)max + 1));
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * (FDS_STACK + 1))]; } cb;
    char *ctl = cb.buf;
    if (space > sizeof cb.buf) {
        ctl = malloc(space);
        if (!ctl) return RL_ECONNLOST;   /* cannot read without losing fds */
    }
    memset(ctl, 0, space);
    struct iovec iov;
    struct msghdr mh;
    iov.iov_base = buf;
    iov.iov_len = n;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl;
    mh.msg_controllen = space;
    int flags = 0;
#ifdef MSG_CMSG_CLOEXEC
    flags |= MSG_CMSG_CLOEXEC;
#endif
    ssize_t r;
    for (;;) {
        r = recvmsg(sock, &mh, flags);
        if (r >= 0) break;
        if (errno == EINTR) continue;
        r = (errno == EAGAIN || errno == EWOULDBLOCK) ? RL_EAGAIN : RL_ECONNLOST;
        goto out;
    }
    int got = 0;
    if (mh.msg_controllen > 0) {
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            if (c->cmsg_len < CMSG_LEN(0)) continue;
            /* A truncated cmsg may claim more than the buffer holds. */
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            ptrdiff_t room = (char *)mh.msg_control + mh.msg_controllen - (char *)CMSG_DATA(c);
            if (room < 0) room = 0;
            if (k > (size_t)room / sizeof(int)) k = (size_t)room / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (got < max) {
#ifndef MSG_CMSG_CLOEXEC
                    fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
                    fds[got++] = fd;
                } else {
                    close(fd);
                    got = max + 1;
                }
            }
        }
    }
    /* Truncated control data: fds were sent that did not fit; the kernel
     * closed those. Report too many; the caller closes fds[0..max-1], so
     * slots that nothing arrived in (only possible here) read -1. */
    if (mh.msg_flags & MSG_CTRUNC) {
        for (int i = got; i < max; i++) fds[i] = -1;
        got = max + 1;
    }
    *nfds = got;
out:
    if (ctl != cb.buf) free(ctl);
    return r;
}
#endif /* !_WIN32 */
