/*
 * rl_shm.h -- same-host shared memory for large payloads (PROTOCOL.md 2.2).
 *
 * A sender creates a region: an anonymous memory file (memfd_create, no
 * name in /dev/shm, gone when the last process holding it exits, even
 * after SIGKILL), sealed so that nobody can shrink or grow it, mapped
 * shared. It passes the fd to its peer over the AF_UNIX connection
 * (SCM_RIGHTS). For each large message it copies the array data into a
 * slot of the region and sends only the header, the meta and the slot's
 * offset on the stream. The receiver maps the same fd shared, read-write:
 * its arrays are views of the slot, and the slot is the receiver's alone
 * (it may write into it) until the last array of the message is released
 * and it tells the sender, which frees the slot; the sender writes a slot
 * only between allocating and sending it. (A private copy-on-write mapping
 * would keep the receiver's writes from the sender too, but forgetting its
 * copies at every release cost page-table churn and TLB shootdowns that
 * made reading the data 1.6-1.8x slower than with this mapping, which stays
 * populated from one message to the next.)
 *
 * Slots are whole pages and are handed out in ring order: a slot held for a
 * long time blocks reuse of the space after it, and rl_shm_alloc then
 * fails, so that the caller sends over the socket instead of waiting.
 *
 * Where memfd_create or sealing is unavailable (non-Linux), rl_shm_create
 * returns NULL (errno ENOSYS), rl_shm_map_fd refuses every descriptor, and
 * callers keep using the socket; rl_sock_write_fd / rl_sock_read_fds still
 * pass descriptors (SCM_RIGHTS is POSIX).
 *
 * Ownership and threads: a region belongs to its creator; every rl_shm_*
 * function on a region is thread-safe (one internal mutex). A map is
 * reference counted; rl_shm_map_* functions are thread-safe.
 */
#ifndef RL_SHM_H
#define RL_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- sender: a region and its slots ------------------------------------- */
typedef struct rl_shm_region rl_shm_region;

/* Create a sealed region of at least size bytes (rounded up to whole
 * pages). Returns NULL (errno set) where unsupported or on failure. */
rl_shm_region *rl_shm_create(size_t size);
/* Unmap and close. Safe while a peer still maps it (the memory lives until
 * the peer unmaps). NULL is allowed. */
void rl_shm_destroy(rl_shm_region *r);

int rl_shm_fd(const rl_shm_region *r);          /* owned by the region */
size_t rl_shm_size(const rl_shm_region *r);
uint8_t *rl_shm_base(const rl_shm_region *r);   /* shared, read-write */

/* Reserve a slot of len bytes (len > 0, rounded up to whole pages) at a
 * page-aligned offset. Returns 0 and *off, or -1 when the region has no
 * room for it now. */
int rl_shm_alloc(rl_shm_region *r, size_t len, uint64_t *off);
/* Free the slot that starts at off. Returns 0, or -1 if no slot starts
 * there (a peer releasing twice or inventing offsets: a protocol error). */
int rl_shm_release(rl_shm_region *r, uint64_t off);
/* Bytes (whole pages) in slots not yet released. */
size_t rl_shm_in_use(rl_shm_region *r);

/* ---- receiver: a mapping of a peer's region ------------------------------ */
typedef struct rl_shm_map rl_shm_map;

/* Map a region received from a peer. Takes ownership of fd (closed on
 * every path). Fails (NULL, *why set to a static reason) unless fd is a
 * memory file sealed against shrinking and growing whose size equals
 * expect_size and is a whole number of pages. refs = 1.
 * copy_on_write = 0: mapped shared (the receiver owns a slot until it
 * releases it and may write into it; the owner sees those writes).
 * copy_on_write = 1, for a region whose slots the owner names to several
 * receivers (parameters to every local actor): mapped private, so that a
 * receiver's writes stay its own; call rl_shm_map_discard on a slot before
 * releasing it. */
rl_shm_map *rl_shm_map_fd(int fd, uint64_t expect_size, int copy_on_write, const char **why);
/* Copy-on-write maps: forget this receiver's private copies of the pages
 * of [off, off + len) (rounded out to whole pages), so that a slot reused
 * by the owner reads as the owner wrote it. No-op on a shared map or a
 * range outside the map, and (Linux: /proc/self/pagemap) on a range this
 * process only read. Call only once nothing uses that range. Thread-safe. */
void rl_shm_map_discard(rl_shm_map *m, uint64_t off, uint64_t len);
rl_shm_map *rl_shm_map_ref(rl_shm_map *m);
void rl_shm_map_unref(rl_shm_map *m);           /* unmaps at zero; NULL allowed */
uint8_t *rl_shm_map_base(const rl_shm_map *m);
uint64_t rl_shm_map_size(const rl_shm_map *m);

/* Whether [off, off + len) is where a sender may put a slot: off a
 * multiple of the page size, the range inside the map (overflow-safe). */
int rl_shm_map_holds(const rl_shm_map *m, uint64_t off, uint64_t len);

/* ---- passing a descriptor over an AF_UNIX stream socket ----------------- */
/* Close a descriptor received with rl_sock_read_fds. */
void rl_shm_close_fd(int fd);
/* Write n bytes with fd attached (SCM_RIGHTS) to the first of them. Returns
 * bytes written (the fd went with them if > 0), RL_EAGAIN or RL_ECONNLOST.
 * n == 0 sends nothing and returns 0 (a stream cannot carry an fd on no
 * bytes); fd < 0 writes the bytes alone. */
ssize_t rl_sock_write_fd(int sock, const void *p, size_t n, int fd);
/* Read like rl_sock_read; descriptors that arrive are stored in fds (up to
 * max, close-on-exec) and counted in *nfds; any beyond max are closed and
 * *nfds is set to max + 1 so that the caller can tell. The caller owns (and
 * must close) the entries >= 0 of fds[0 .. min(*nfds, max) - 1] in every
 * case, including max + 1. Control data cut short by the kernel (MSG_CTRUNC) also reports
 * max + 1: descriptors were lost, and entries of fds[0 .. max - 1] that
 * nothing arrived in are set to -1.
 *
 * Every read on a stream that may carry descriptors must use this: a plain
 * read (rl_sock_read) that consumes bytes with an fd attached makes the
 * kernel close that fd. On Linux the fd arrives with the read that takes
 * the first byte of its write, possibly after earlier bytes in the same
 * read. */
ssize_t rl_sock_read_fds(int sock, void *buf, size_t n, int *fds, int max, int *nfds);

#ifdef __cplusplus
}
#endif
#endif
