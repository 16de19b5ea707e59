/* rl_node.c -- an rlink node: I/O thread, connections, queues. See rl_node.h.
 *
 * Locking, in acquisition order:
 *   node->close_mu   serialises rl_node_close callers
 *   node->mu         queues, the connection table, params, events, flags
 *   conn->send_mu    one connection's send ring, its fd for writing, `closed`
 * A thread holding conn->send_mu never takes node->mu. Only the I/O thread
 * reads from sockets, accepts, and closes connections.
 */
#define _GNU_SOURCE
#include "rl_node.h"
#include "rl_os.h"
#include "rl_auth.h"
#include "rl_poll.h"
#include "rl_ring.h"
#include "rl_shm.h"
#include "rl_sock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================== */
/* types                                                                    */
/* ======================================================================== */
enum { CONN_HANDSHAKE = 1, CONN_OPEN = 2, CONN_CLOSED = 3 };
enum { HS_HELLO = 0, HS_PROOF = 1 };
#define RL_MAX_LISTEN 3
#define RL_NONCE_SIZE 32u

#define RX_CAP (128u * 1024u)      /* small-frame receive buffer */
#define RX_SMALL_MAX (64u * 1024u) /* larger frames are read straight into their own buffer */
#define READ_BUDGET (1u << 20)     /* bytes per connection per loop turn: fairness */
#define PARAMS_PROMOTE_BELOW (256u * 1024u)
#define MAX_IOV 64
/* Send batching: a small trajectory frame sent within BATCH_GAP_NS of the
 * previous write on its connection is appended to the ring instead of
 * written at once, and the whole batch goes in one syscall: written by its
 * sender once BATCH_FLUSH_AT bytes wait or its first frame is BATCH_GAP_NS
 * old, else by the I/O thread at that age (its poll timeout, kept to the
 * microsecond). The I/O thread is woken once per batch and does not write a
 * younger one: a write per wake-up cost two context switches for a handful
 * of frames on the sender's core. Isolated sends, and requests/replies, are
 * written immediately for latency. */
#define BATCH_MAX_FRAME (16u * 1024u)
#define BATCH_FLUSH_AT (64u * 1024u)
#define BATCH_GAP_NS 50000LL
/* A frame at least this large is written by its sender from the caller's
 * memory even when the socket is momentarily full: the sender waits for
 * POLLOUT itself (send_mu released, direct_writer set) rather than copying
 * the rest into the ring for the I/O thread. */
#define DIRECT_BLOCK_MIN (64u * 1024u)
#define NEVENTS 256
#define NCANCELLED 1024

typedef struct rl_conn {
    long refs;                 /* atomic: the table holds one, senders borrow */
    int fd;
    int state;                 /* I/O thread (and table readers under node->mu) */
    uint64_t peer_id;
    long long deadline_ms;     /* handshake deadline */
    unsigned interest;         /* current poller interest, I/O thread only */
    /* receive side: I/O thread only */
    uint8_t hs[2 * RL_HELLO_SIZE]; /* hello (+ nonce when authenticating), then the proof */
    size_t hs_have, hs_need;
    int hs_phase;              /* HS_HELLO, HS_PROOF */
    rl_hello hs_peer;          /* the actor's hello while its proof is awaited */
    uint8_t hs_expect[RL_SHA256_SIZE];  /* the proof a holder of the key sends */
    uint8_t *rx;
    size_t rx_len;
    rl_msg *big;
    uint64_t big_have;
    uint32_t big_crc;          /* CRC32C of the big frame's body read so far */
    /* send side: under send_mu */
    rl_mutex send_mu;
    rl_cond send_cv;
    rl_ring ring;
    rl_buf *pending_params;
    int want_out;
    int closed;
    int direct_writer;         /* a sender is writing to fd without send_mu */
    uint8_t *held;             /* control frames that fell due while a sender wrote
                                  a frame directly, queued once it is done (put on
                                  the ring then, one would split that frame if the
                                  write stopped part-way): ring_put_control */
    size_t held_len, held_cap;
    long long batch_ns;        /* send_mu: when the oldest frame of a batch in the ring was queued, or 0 */
    long long last_write_ns;
    long long last_tx_ms;      /* last successful write (heartbeats) */
    /* message boundaries in the ring, to count what a broken link drops */
    uint64_t bytes_in, bytes_out;
    uint64_t *ends;
    size_t ends_cap, ends_head, ends_n;
    /* liveness, I/O thread only */
    long long last_rx_ms;
    /* reliable mode */
    int reliable;              /* frames carry checksums; learner: sequenced */
    uint64_t last_seq;         /* actor: highest seq put on this connection (send_mu) */
    struct rl_session *sess;   /* learner: the actor's session (under node->mu) */
    /* per-peer counters (atomic): application messages, whole frames */
    uint64_t msgs_in, frame_bytes_in, msgs_out, frame_bytes_out;
    uint64_t params_version;   /* learner: newest parameters put on this connection */
    long long opened_ms;
    int local;                 /* AF_UNIX: a same-host connection */
    /* shared memory (PROTOCOL.md 2.2) */
    struct rl_node *node;      /* set by table_add; used only while !closed */
    unsigned fork_count;       /* rl_fork_count() of the process that made it */
    int shm_accepts;           /* our hello said we map a region the peer offers */
    int pending_fd;            /* a descriptor read off the stream, not yet claimed (I/O thread) */
    rl_shm_map *shm_map;       /* the peer's newest region, mapped; freed with the conn */
    int shm_map_shared;        /* its slots go to other receivers too: mapped copy-on-write */
    uint64_t shm_map_id;       /* its id (SHM_REGION ack; 0 unless shared), echoed in releases */
    int peer_shm;              /* the peer's hello says it maps a region we offer */
    /* learner: parameters through the node's region (under send_mu) */
    uint64_t pshm_id;          /* id of the node's region this peer was given, or 0 */
    uint64_t pshm_held;        /* bit i: it holds slot i of that region (pending or sent) */
    int pshm_pending;          /* the slot pending_params names, or -1 */
    uint64_t pub_mark;         /* the publish that gives it the shared-slot frame */
    rl_shm_region *shm_out;    /* our region for this peer; freed with the conn */
} rl_conn;

/* Learner, reliable mode: what one actor session has been delivered. Kept
 * across reconnections; fields under node->mu (delivered: I/O thread). */
typedef struct rl_session {
    uint64_t id;               /* the actor's node id */
    uint64_t delivered;        /* highest seq queued for the application */
    uint64_t consumed;         /* highest seq the application has taken */
    uint64_t ack_sent;         /* highest ack sent */
    uint64_t owed_bytes;       /* meta and data taken since that ack */
    uint64_t owed_slot_bytes;  /* of them, data in the actor's slots */
    int attached;              /* has an open connection */
    size_t queued;             /* its messages still in the receive queue */
    long long detached_ms;
} rl_session;

#define MAX_SESSIONS 4096
/* Learner: parameter versions alive at once in its shared region (a bit
 * per slot in rl_conn.pshm_held). */
#define PSLOTS 64
/* The learner acknowledges what its application took (PROTOCOL.md 9.3) at
 * once when a session is owed ACK_EVERY messages, ACK_SLOT_BYTES of data
 * lying in the actor's shared-memory slots (it cannot reuse a slot before)
 * or ACK_BYTES in all; otherwise ACK_DELAY_MS after the first owed message
 * was taken. An ack at every I/O wake-up cost the actor a thread wake-up,
 * and its writing thread the socket's lock, per large message. */
#define ACK_EVERY 256
#define ACK_SLOT_BYTES ((uint64_t)4 << 20)
#define ACK_BYTES ((uint64_t)32 << 20)
#define ACK_DELAY_MS 2
/* Same-host shared memory (PROTOCOL.md 2.2): memfd and sealing are Linux's. */
/* A receiver maps at most this much address space for one peer's region. */
#define SHM_MAX_REGION ((uint64_t)1 << 34)
#if defined(__linux__)
#define SHM_AVAILABLE 1
#else
#define SHM_AVAILABLE 0
#endif
/* Retained frames of up to RET_PACK_MAX bytes are packed one after another
 * into shared RET_CHUNK-byte buffers (each frame holds a reference to its
 * chunk): no malloc and free per small message, and consecutive frames
 * leave in one iovec. A chunk is freed, into the frame cache, when its last
 * frame is acknowledged and written; a larger frame has a buffer of its own. */
#define RET_CHUNK (64u * 1024u)
#define RET_PACK_MAX (16u * 1024u)
/* A reliable frame at least this large is written from the caller's memory
 * while the I/O thread, on the other core, makes its retained copy: one pass
 * over the bytes on each core instead of a copy and then a write on one. */
#define COPY_ASIDE_MIN (256u * 1024u)
enum { COPY_IDLE, COPY_POSTED, COPY_RUNNING, COPY_DONE };

typedef struct retained_frame {
    uint64_t seq;
    rl_buf *buf;               /* a reference to the buffer (or chunk) that holds it */
    uint8_t *data;             /* the frame in buf, header included: whole, or (shm
                                  set) header and meta of a shared-memory frame */
    size_t len;
    int queued;                /* was put on a connection (may have been delivered) */
    int released;              /* shm: the learner gave the slot back before the ack */
    rl_conn *shm;              /* a reference to the link whose region holds the
                                  data, or NULL */
    uint64_t shm_off;          /* shm: the slot (also in the header's `ack`) */
    rl_buf *owner;             /* sent by reference (rl_node_send_owned): a
                                  reference to the caller's memory, where the
                                  body is; data holds the header only */
    const rl_iov *body;        /* with owner: the body's pieces (in buf) */
    int nbody;
} retained_frame;

typedef struct msgq {
    rl_msg *head, *tail;
    size_t count;
    uint64_t bytes;
} msgq;

struct rl_node {
    rl_config cfg;             /* cfg.auth_key points at auth_key below */
    uint8_t *auth_key;
    uint64_t id;
    int lfds[RL_MAX_LISTEN];   /* learner: TCP, then same-host endpoints */
    int nlfds;
    char ipc_path[RL_LOCAL_NAME_MAX];  /* a socket file to remove at close */
    long long accept_paused_until;   /* I/O thread: out of fds, retry accepting then */
    rl_waker waker;
    rl_poller *poller;
    rl_thread thread;
    int started, joined;

    rl_mutex close_mu;
    rl_mutex mu;
    rl_cond cv;

    rl_conn **conns;
    int nconns, capconns;

    msgq q[RL_NQUEUES];
    size_t in_count;           /* messages in all queues */
    uint64_t in_bytes;
    int reading_paused;

    msgq pend[RL_NQUEUES];     /* I/O thread only: frames read this turn, not yet queued */
    int npend;

    rl_buf *params;            /* learner: newest published frame (whole), or NULL */
    /* learner: parameters through shared memory, one copy for every local
     * actor (PROTOCOL.md 2.2). Changed under mu; the region is created,
     * written and destroyed only by a publish (pub_mu). */
    rl_mutex pub_mu;           /* one publish at a time */
    rl_shm_region *pshm;
    uint64_t pshm_id;          /* > 0 once there is a region; bumped with every new one */
    int pshm_stale;            /* a peer left holding slots: replace before the next use */
    struct { uint64_t off; uint32_t refs; int used; } pslot[PSLOTS];
    int pshm_latest;           /* the slot of the newest parameters (the node holds it), or -1 */
    rl_buf *pshm_frame;        /* their frame naming that slot (header + meta), or NULL */
    uint64_t pub_count;
    rl_msg *params_in;         /* actor: newest received, not yet taken */
    uint64_t params_in_version;
    uint64_t params_newest;    /* actor: newest version received */

    rl_event events[NEVENTS];
    int ev_head, ev_count;
    int ev_pending;            /* atomic mirror of ev_count */

    uint64_t cancelled[NCANCELLED];  /* actor: request ids whose replies nobody waits for */
    int ncancelled, cancelled_next;

    int closing;               /* under mu; also read atomically */
    long long flush_deadline;
    int conn_lost;             /* actor: its only connection is gone */
    char lost_reason[160];
    uint64_t conn_gen;         /* actor: bumped on every loss */

    /* actor, reliable mode (under mu unless noted) */
    rl_mutex rel_mu;    /* orders sequence numbers with the ring */
    int reliable;              /* the session is reliable */
    int failed;                /* the application's policy gave up reconnecting */
    uint64_t learner_id;       /* incarnation of the learner last connected */
    uint64_t next_seq;
    uint64_t acked;
    retained_frame *ret;
    size_t ret_cap, ret_head, ret_n;
    size_t ret_shm;            /* of them, frames whose data is in a slot */
    uint64_t ret_bytes;
    int ret_waiters;           /* threads waiting for the window to shrink */
    uint64_t wake_seq;         /* atomic: bumped with every broadcast of cv */
    rl_buf *ret_chunk;         /* the chunk small frames are packed into now (its
                                  len: the bytes taken), or NULL */
    /* The retained copy of a large frame, made by the I/O thread while the
     * sender (holding rel_mu: one job at a time) checksums and writes the
     * same bytes from the caller's memory: copy_job_post / copy_job_run /
     * copy_job_wait. */
    struct {
        rl_mutex mu;           /* a leaf lock: nothing is taken under it */
        rl_cond cv;            /* state left COPY_RUNNING */
        int state;             /* COPY_*; also read atomically */
        uint8_t *frame;        /* body_copy(frame, src, nsrc) */
        const rl_iov *src;     /* the sender's, valid until it has the result */
        int nsrc;
        uint32_t crc;          /* COPY_DONE: of the bytes copied */
    } copy;

    /* learner, reliable mode (under mu) */
    rl_session **sessions;
    int nsessions, capsessions;
    int ack_dirty;             /* the application took sequenced messages */
    int ack_urgent;            /* acknowledge them now (and the I/O thread was woken) */
    int ack_slots;             /* some of them hold slots of an actor's region */
    long long ack_first_ms;    /* when ack_dirty was set */
    long long last_ack_wake_ms;

    /* counters (atomic) */
    uint64_t st_sent, st_received, st_dropped, st_redelivered, st_duplicates,
        st_reconnects, st_rejected;
};

#define STAT_ADD(n, field, v) rl_atomic_add(&(n)->field, (uint64_t)(v), RL_RELAXED)

/* Wake every thread waiting on n->cv (n->mu held). The sequence number lets
 * a waiter spin for a moment without the lock (wait_spinning). */
static void wake_waiters(rl_node *n) {
    rl_atomic_add(&n->wake_seq, 1, RL_RELEASE);
    rl_cond_broadcast(&n->cv);
}

/* Request/reply waits (n->mu held): spin up to cfg.wait_spin_us, without
 * the lock, for the I/O thread's next wake-up before sleeping on n->cv. On
 * a VM a sleeping thread takes 20-40 us to run again, longer than the rest
 * of a round trip on one host; a reply or request that is about to arrive
 * is then picked up at once. Only the first wait of a call spins. */
static int wait_spinning(rl_node *n, long long deadline, int *spun) {
    if (!*spun && n->cfg.wait_spin_us > 0) {
        *spun = 1;
        uint64_t seen = (uint64_t)rl_atomic_load(&n->wake_seq, RL_ACQUIRE);
        rl_mutex_unlock(&n->mu);
        long long until = rl_mono_ns() + 1000LL * n->cfg.wait_spin_us;
        int woke = 0;
        while (!woke && rl_mono_ns() < until) {
            for (int i = 0; i < 64 && !woke; i++) {
                woke = (uint64_t)rl_atomic_load(&n->wake_seq, RL_ACQUIRE) != seen;
                RL_CPU_RELAX();
            }
        }
        rl_mutex_lock(&n->mu);
        /* A wake-up between the last look and taking the lock back was
         * broadcast while nobody waited on cv: it counts (wake_waiters bumps
         * wake_seq under mu), or the waiter would sleep through the reply. */
        if (woke || (uint64_t)rl_atomic_load(&n->wake_seq, RL_ACQUIRE) != seen) return 0;
    }
    return rl_cond_wait_until(&n->cv, &n->mu, deadline);
}
#define CONN_COUNT(c, msgs, bytes, nbytes) do { \
        rl_atomic_add(&(c)->msgs, 1, RL_RELAXED); \
        rl_atomic_add(&(c)->bytes, (uint64_t)(nbytes), RL_RELAXED); } while (0)

/* ======================================================================== */
/* small helpers                                                            */
/* ======================================================================== */
static long long to_deadline(int timeout_ms) {
    return timeout_ms < 0 ? -1 : rl_now_ms() + timeout_ms;
}

static uint64_t random_id(void) {
    uint64_t v = 0;
    if (rl_random_bytes(&v, sizeof v) != 0) v = 0;
    if (v == 0) {   /* no OS generator: the clock and (ASLR) a stack address */
        v = ((uint64_t)rl_mono_ns() << 16) ^ (uint64_t)rl_mono_ns() ^ ((uint64_t)(uintptr_t)&v << 20);
    }
    v &= 0x7fffffffffffffffull;  /* fits a signed 64-bit integer everywhere */
    return v ? v : 1;
}

static void shm_give_back(rl_msg *m);

void rl_msg_free(rl_msg *m) {
    if (!m) return;
    if (m->shm) shm_give_back(m);
    if (m->cap) {
        rl_mem_free(m->frame, m->cap);
        free(m);
    } else {
        free(m);   /* the frame was in the same block */
    }
}

/* A small frame shares one allocation with its message (one malloc and one
 * free per message, not two: the I/O thread allocates and the application's
 * thread frees, glibc's slowest pattern); a large one comes from the frame
 * cache. The block is a plain malloc with room to align the frame to
 * RL_ALIGN by hand: with glibc's memalign this function took 777
 * instructions a W1 message, with malloc 289 (callgrind). */
#define MSG_INLINE_MAX 4096

rl_msg *rl_msg_new(const rl_header *h, uint64_t peer_id) {
    uint64_t size = rl_frame_size(h);
    if (size > SIZE_MAX - 64) return NULL;
    rl_msg *m;
    if (size <= MSG_INLINE_MAX) {
        m = malloc(sizeof *m + (RL_ALIGN - 1) + (size_t)size);
        if (!m) return NULL;
        uintptr_t at = (uintptr_t)(m + 1);
        m->frame = (uint8_t *)((at + (RL_ALIGN - 1)) & ~(uintptr_t)(RL_ALIGN - 1));
        m->cap = 0;
    } else {
        m = malloc(sizeof *m);
        if (!m) return NULL;
        m->frame = rl_mem_alloc((size_t)size, &m->cap);
        if (!m->frame) { free(m); return NULL; }
    }
    m->next = NULL;
    m->hdr = *h;
    m->peer_id = peer_id;
    m->size = size;
    m->data = NULL;
    m->shm = NULL;
    m->shm_map = NULL;
    m->shm_id = 0;
    m->session = NULL;
    m->body_crc = 0;
    m->body_crc_done = 0;
    return m;
}

void rl_config_default(rl_config *c, int role) {
    memset(c, 0, sizeof *c);
    c->role = role;
    c->retry_attempts = 3;
    c->queue_max_msgs = 1024;
    c->queue_max_bytes = (size_t)256 << 20;
    c->sendq_max_bytes = (size_t)64 << 20;
    c->handshake_timeout_ms = 5000;
    c->heartbeat_ms = 1000;
    c->peer_timeout_ms = 5000;
    c->retain_max_bytes = (size_t)256 << 20;
    c->local = 1;
    c->shm_bytes = (size_t)64 << 20;
    c->shm_min_bytes = (size_t)64 << 10;
    c->wait_spin_us = 50;
    rl_limits_default(&c->limits);
}

/* ---- events (under node->mu) ---- */
static void push_event(rl_node *n, int type, uint64_t peer, int code, const char *reason) {
    if (n->ev_count == NEVENTS) {   /* drop the oldest rather than block the I/O thread */
        n->ev_head = (n->ev_head + 1) % NEVENTS;
        n->ev_count--;
    }
    rl_event *e = &n->events[(n->ev_head + n->ev_count) % NEVENTS];
    e->type = type;
    e->peer_id = peer;
    e->code = code;
    snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "");
    n->ev_count++;
    rl_atomic_store(&n->ev_pending, n->ev_count, RL_RELEASE);
}

/* ---- queues (under node->mu) ---- */
static void q_push(rl_node *n, int qi, rl_msg *m) {
    msgq *q = &n->q[qi];
    m->next = NULL;
    if (q->tail) q->tail->next = m; else q->head = m;
    q->tail = m;
    q->count++;
    q->bytes += m->size;
    n->in_count++;
    n->in_bytes += m->size;
}

static rl_msg *q_unlink(rl_node *n, int qi, rl_msg *prev, rl_msg *m) {
    msgq *q = &n->q[qi];
    if (prev) prev->next = m->next; else q->head = m->next;
    if (q->tail == m) q->tail = prev;
    q->count--;
    q->bytes -= m->size;
    n->in_count--;
    n->in_bytes -= m->size;
    m->next = NULL;
    return m;
}

static int queues_have_room(rl_node *n) {
    return n->in_count < n->cfg.queue_max_msgs && n->in_bytes < n->cfg.queue_max_bytes;
}

/* Called after a pop: let the I/O thread read again if it had paused. */
static void after_pop(rl_node *n) {
    if (n->reading_paused && queues_have_room(n)) {
        n->reading_paused = 0;
        rl_waker_wake(&n->waker);
    }
}

/* ======================================================================== */
/* connections                                                              */
/* ======================================================================== */
static rl_conn *conn_new(int fd, int state) {
    rl_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->rx = malloc(RX_CAP);
    if (!c->rx) { free(c); return NULL; }
    c->refs = 1;
    c->fd = fd;
    c->state = state;
    c->hs_need = RL_HELLO_SIZE;
    c->opened_ms = rl_now_ms();
    c->pending_fd = -1;
    c->pshm_pending = -1;
    c->fork_count = rl_fork_count();
    rl_mutex_init(&c->send_mu);
    rl_cond_init(&c->send_cv);
    rl_ring_init(&c->ring);
    return c;
}

static rl_conn *conn_ref(rl_conn *c) {
    rl_atomic_add(&c->refs, 1, RL_RELAXED);
    return c;
}

static void conn_unref(rl_conn *c) {
    if (rl_atomic_sub(&c->refs, 1, RL_ACQ_REL) != 0) return;
    rl_ring_free(&c->ring);
    rl_buf_unref(c->pending_params);
    rl_msg_free(c->big);
    free(c->ends);
    free(c->held);
    free(c->rx);
    rl_shm_close_fd(c->pending_fd);
    rl_shm_map_unref(c->shm_map);   /* every message in it held a reference to c */
    rl_shm_destroy(c->shm_out);
    rl_mutex_destroy(&c->send_mu);
    rl_cond_destroy(&c->send_cv);
    free(c);
}

/* ---- the send ring with message boundaries (send_mu held) ---------------
 * Every byte goes through these so that bytes_in/bytes_out stay exact; a
 * message's end offset is recorded when its last byte enters the ring. */
static int ring_put_copy(rl_conn *c, const void *p, size_t n) {
    int rc = rl_ring_push_copy(&c->ring, p, n);
    if (!rc) c->bytes_in += n;
    return rc;
}

static uint8_t *ring_put_room(rl_conn *c, size_t n) {
    uint8_t *p = rl_ring_push_room(&c->ring, n);
    if (p) c->bytes_in += n;
    return p;
}

static int ring_put_ref(rl_conn *c, rl_buf *b, const uint8_t *p, size_t n) {
    int rc = rl_ring_push_ref(&c->ring, b, p, n);
    if (!rc) c->bytes_in += n;
    return rc;
}

static void ring_mark_message(rl_conn *c) {
    if (c->ends_n == c->ends_cap) {
        size_t cap = c->ends_cap ? c->ends_cap * 2 : 64;
        uint64_t *v = malloc(cap * sizeof *v);
        if (!v) return;   /* only the drop count becomes approximate */
        for (size_t i = 0; i < c->ends_n; i++) v[i] = c->ends[(c->ends_head + i) % c->ends_cap];
        free(c->ends);
        c->ends = v;
        c->ends_cap = cap;
        c->ends_head = 0;
    }
    c->ends[(c->ends_head + c->ends_n) % c->ends_cap] = c->bytes_in;
    c->ends_n++;
}

/* A header-only control frame onto c's ring, in order with the frames
 * around it; while a sender writes a frame directly, held until it has
 * queued what the socket did not take (held_release). Returns 0 or
 * RL_ENOMEM. */
static int ring_put_control(rl_conn *c, const uint8_t out[RL_HEADER_SIZE]) {
    if (!c->direct_writer && c->held_len == 0) return ring_put_copy(c, out, RL_HEADER_SIZE);
    if (c->held_len == c->held_cap) {
        size_t cap = c->held_cap ? c->held_cap * 2 : 8 * RL_HEADER_SIZE;
        uint8_t *p = realloc(c->held, cap);
        if (!p) return RL_ENOMEM;
        c->held = p;
        c->held_cap = cap;
    }
    memcpy(c->held + c->held_len, out, RL_HEADER_SIZE);
    c->held_len += RL_HEADER_SIZE;
    return 0;
}

/* Held control frames onto the ring, once no sender writes directly, and
 * the connection marked for writing. Returns 1 if the I/O thread was not
 * watching for that yet (a sender then wakes it, after unlocking). */
static int held_release(rl_conn *c) {
    if (!c->held_len || c->direct_writer || ring_put_copy(c, c->held, c->held_len)) return 0;
    c->held_len = 0;
    int was = c->want_out;
    c->want_out = 1;
    return !was;
}

/* A retained frame onto c's ring by reference, from its byte skip on, and
 * its end marked: whole or not at all. Returns 0 or RL_ENOMEM. */
static int ring_put_retained(rl_conn *c, const retained_frame *r, uint64_t skip) {
    if (!r->owner) {
        if (ring_put_ref(c, r->buf, r->data + skip, (size_t)(r->len - skip))) return RL_ENOMEM;
        ring_mark_message(c);
        return 0;
    }
    /* the header from buf, then the body's pieces from the caller's memory */
    if (rl_ring_reserve(&c->ring, 1 + (size_t)r->nbody)) return RL_ENOMEM;
    if (skip < RL_HEADER_SIZE) ring_put_ref(c, r->buf, r->data + skip, RL_HEADER_SIZE - (size_t)skip);
    skip = skip > RL_HEADER_SIZE ? skip - RL_HEADER_SIZE : 0;
    for (int j = 0; j < r->nbody; j++) {
        if (skip >= r->body[j].len) { skip -= r->body[j].len; continue; }
        ring_put_ref(c, r->owner, (const uint8_t *)r->body[j].base + skip, r->body[j].len - (size_t)skip);
        skip = 0;
    }
    ring_mark_message(c);
    return 0;
}

static void ring_take(rl_conn *c, size_t n) {
    rl_ring_consume(&c->ring, n);
    c->bytes_out += n;
    while (c->ends_n && c->ends[c->ends_head] <= c->bytes_out) {
        c->ends_head = (c->ends_head + 1) % c->ends_cap;
        c->ends_n--;
    }
}

/* under node->mu */
static int table_add(rl_node *n, rl_conn *c) {
    c->node = n;
    if (n->nconns == n->capconns) {
        int cap = n->capconns ? n->capconns * 2 : 16;
        rl_conn **t = realloc(n->conns, (size_t)cap * sizeof *t);
        if (!t) return RL_ENOMEM;
        n->conns = t;
        n->capconns = cap;
    }
    n->conns[n->nconns++] = c;
    return 0;
}

static void table_remove(rl_node *n, rl_conn *c) {
    for (int i = 0; i < n->nconns; i++) {
        if (n->conns[i] == c) {
            n->conns[i] = n->conns[--n->nconns];
            return;
        }
    }
}

/* Find the open connection to peer_id (under node->mu); an actor's only
 * connection when any is set. Peer ids are never 0 (the hello forbids it). */
static rl_conn *table_find(rl_node *n, uint64_t peer_id, int any) {
    for (int i = 0; i < n->nconns; i++) {
        rl_conn *c = n->conns[i];
        if (c->state == CONN_OPEN && (any || c->peer_id == peer_id)) return c;
    }
    return NULL;
}

/* Mark a connection closed for writers and close its fd. Any thread that
 * owns the table reference may call this once (the I/O thread, or close). */
static void conn_shut(rl_node *n, rl_conn *c) {
    if (n->poller && c->fd >= 0) rl_poller_del(n->poller, c->fd);
    rl_mutex_lock(&c->send_mu);
    rl_atomic_store(&c->closed, 1, RL_RELEASE);
    if (c->direct_writer && c->fd >= 0) {
        /* Wake the sender out of poll/writev, and let it leave the fd
         * before closing it (a closed fd number can be reused at once). */
        rl_sock_shutdown(c->fd, RL_SHUT_RDWR);
        while (c->direct_writer) rl_cond_wait(&c->send_cv, &c->send_mu);
    }
    if (c->fd >= 0) rl_closesocket(c->fd);
    c->fd = -1;
    if (!c->reliable || n->cfg.role == RL_ROLE_LEARNER) STAT_ADD(n, st_dropped, c->ends_n);
    c->ends_n = 0;
    rl_ring_clear(&c->ring);
    rl_buf_unref(c->pending_params);
    c->pending_params = NULL;
    c->want_out = 0;
    rl_cond_broadcast(&c->send_cv);
    rl_mutex_unlock(&c->send_mu);
}

static void pshm_leave(rl_node *n, rl_conn *c);

/* I/O thread: drop a connection, report why, release the table's reference. */
static void conn_drop(rl_node *n, rl_conn *c, int ev_type, int code, const char *reason) {
    int was_open = c->state == CONN_OPEN;
    conn_shut(n, c);
    rl_mutex_lock(&n->mu);
    c->state = CONN_CLOSED;
    table_remove(n, c);
    if (n->cfg.role == RL_ROLE_LEARNER) pshm_leave(n, c);
    if (c->sess) {
        c->sess->attached = 0;
        c->sess->detached_ms = rl_now_ms();
        c->sess = NULL;
    }
    if (ev_type == RL_EV_REJECTED) STAT_ADD(n, st_rejected, 1);
    if (was_open || ev_type == RL_EV_REJECTED)
        push_event(n, ev_type, c->peer_id, code, reason);
    if (n->cfg.role == RL_ROLE_ACTOR && was_open) {
        n->conn_lost = 1;
        n->conn_gen++;
        snprintf(n->lost_reason, sizeof n->lost_reason, "%s", reason);
    }
    wake_waiters(n);
    rl_mutex_unlock(&n->mu);
    conn_unref(c);
}

/* ---- send side ---------------------------------------------------------- */

/* Write as much of the ring as the socket takes (send_mu held). Returns 0 or
 * RL_ECONNLOST. Promotes pending parameters when the ring runs low. */
static int ring_flush_locked(rl_conn *c) {
    void *bases[MAX_IOV];
    size_t lens[MAX_IOV];
    if (c->direct_writer) return 0;   /* it flushes the ring when it is done */
    for (;;) {
        if (c->pending_params && c->ring.bytes < PARAMS_PROMOTE_BELOW) {
            rl_buf *b = c->pending_params;
            if (ring_put_ref(c, b, b->data, b->len) == 0) {
                ring_mark_message(c);
                CONN_COUNT(c, msgs_out, frame_bytes_out, b->len);
                rl_header ph;
                if (rl_header_decode(b->data, UINT64_MAX, &ph) == RL_OK)
                    rl_atomic_store(&c->params_version, ph.ref, RL_RELAXED);
                c->pending_params = NULL;
                c->pshm_pending = -1;   /* sent: its slot stays held until released */
                rl_buf_unref(b);
            }
        }
        if (c->ring.bytes == 0) break;
        int k = rl_ring_peek(&c->ring, bases, lens, MAX_IOV);
        ssize_t w = rl_sock_writev(c->fd, bases, lens, k);
        if (w == RL_EAGAIN) break;
        if (w < 0) return RL_ECONNLOST;
        ring_take(c, (size_t)w);
        c->last_write_ns = rl_mono_ns();
        c->last_tx_ms = c->last_write_ns / 1000000;   /* rl_now_ms(), one clock read */
    }
    c->want_out = c->ring.bytes > 0 || c->pending_params != NULL;
    if (c->ring.bytes == 0) c->batch_ns = 0;
    rl_cond_broadcast(&c->send_cv);
    return 0;
}

/* Batching (BATCH_* above), send_mu held, t the clock read for this send.
 * batch_join: does a frame of kind and total bytes join a batch? The first
 * one into an empty ring starts the batch's clock. Call it before queuing. */
static int batch_join(rl_conn *c, int kind, uint64_t total, long long t) {
    int batch = kind == RL_KIND_TRAJ && total <= BATCH_MAX_FRAME &&
                t - c->last_write_ns < BATCH_GAP_NS;
    if (batch && c->ring.bytes == 0) c->batch_ns = t;
    return batch;
}

/* ... and once the frame is queued: must its sender write the ring now?
 * Yes when the batch is full or BATCH_GAP_NS old, and for a frame that is
 * no part of a batch (a request after a burst takes the batch with it). */
static int batch_due(const rl_conn *c, int batch, long long t) {
    return !batch || c->ring.bytes >= BATCH_FLUSH_AT ||
           (c->batch_ns && t - c->batch_ns >= BATCH_GAP_NS);
}

/* The CRC32C of the bytes of iov[], one piece after another. */
static uint32_t iov_crc(const rl_iov *iov, int iovcnt) {
    uint32_t crc = 0;
    for (int i = 0; i < iovcnt; i++) crc = rl_crc32c(crc, iov[i].base, iov[i].len);
    return crc;
}

/* Seal a header for the wire: on a reliable link it carries the body's
 * CRC32C (and rl_header_encode adds the header's own). */
static void seal_header(rl_header *h, uint8_t out[RL_HEADER_SIZE], int checksum,
                        const rl_iov *iov, int iovcnt) {
    h->crc = 0;
    h->flags &= (uint8_t)~RL_FLAG_CHECKSUM;
    if (checksum) {
        h->flags |= RL_FLAG_CHECKSUM;
        h->crc = iov_crc(iov, iovcnt);
    }
    rl_header_encode(h, out);
}

static uint32_t body_crc(const uint8_t *frame, size_t size) {
    return rl_crc32c(0, frame + RL_HEADER_SIZE, size - RL_HEADER_SIZE);
}

/* Recompute the header's own checksum after a change to its flags byte
 * (RL_FLAG_CHECKSUM set; the body and so its checksum are unchanged). */
static void reseal_header(uint8_t *frame) {
    uint32_t crc = rl_crc32c(0, frame, RL_HEADER_HCRC_OFFSET);
    for (int i = 0; i < 4; i++) frame[RL_HEADER_HCRC_OFFSET + i] = (uint8_t)(crc >> (8 * i));
}

/* Copy a message's data section to dst and write into wire[] the iovecs of
 * its meta alone (the padding is dropped). Returns how many, or -1 if the
 * meta is split into more than max pieces (then dst may hold part of the
 * data). */
static int shm_copy_in(uint8_t *dst, const rl_header *h, const rl_iov *iov, int iovcnt,
                       rl_iov *wire, int max) {
    uint64_t meta_left = h->meta_len, pad_left = rl_frame_pad(h);
    int k = 0;
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].base;
        size_t len = iov[i].len, t = len < meta_left ? len : (size_t)meta_left;
        if (t) {
            if (k == max) return -1;
            wire[k].base = p;
            wire[k].len = t;
            k++;
            meta_left -= t;
            p += t;
            len -= t;
        }
        t = len < pad_left ? len : (size_t)pad_left;
        pad_left -= t;
        p += t;
        len -= t;
        if (len) {
            memcpy(dst, p, len);
            dst += len;
        }
    }
    return k;
}

/* Put a message's data section in a slot of region r: copy it there, point
 * the header at it (RL_FLAG_SHM, offset in `ack`) and write into wire[] the
 * iovecs of the meta alone. Returns how many, or 0 if the region has no
 * room now (or the meta is split into more than max pieces): then nothing
 * changed and the message goes on the stream whole. Caller's thread, no
 * lock held: this is the message's one copy. */
static int shm_put(rl_shm_region *r, rl_header *h, const rl_iov *iov, int iovcnt, rl_iov *wire,
                   int max) {
    uint64_t off;
    if (rl_shm_alloc(r, (size_t)h->data_len, &off) != 0) return 0;
    int k = shm_copy_in(rl_shm_base(r) + off, h, iov, iovcnt, wire, max);
    if (k < 0) { rl_shm_release(r, off); return 0; }
    h->flags |= RL_FLAG_SHM;
    h->ack = off;
    return k;
}

/* send_mu held, c's ring empty and no other direct writer: write the
 * header and then iov[] straight from the caller's memory (t: the clock
 * read for this send). A frame of DIRECT_BLOCK_MIN bytes or more waits for
 * the socket itself (send_mu released, direct_writer set) until written or
 * the deadline passes; a smaller one writes what the socket takes now.
 * Returns RL_OK, RL_ECONNLOST or RL_ECLOSED, with the bytes written in
 * *sent; the caller queues the rest. */
static int direct_write(rl_node *n, rl_conn *c, const uint8_t *hdr, const rl_iov *iov,
                        int iovcnt, uint64_t total, long long deadline, long long t,
                        uint64_t *sent) {
    void *bases[MAX_IOV];
    size_t lens[MAX_IOV];
    int k = 0, next = 0, unlocked = 0, done = 0, rc = RL_OK, fd = c->fd;
    uint64_t wrote = 0;
    bases[k] = (void *)hdr; lens[k] = RL_HEADER_SIZE; k++;
    c->last_write_ns = t;
    c->last_tx_ms = t / 1000000;   /* rl_now_ms(), one clock read */
    for (;;) {
        while (k < MAX_IOV && next < iovcnt) {
            if (iov[next].len) { bases[k] = (void *)iov[next].base; lens[k] = iov[next].len; k++; }
            next++;
        }
        ssize_t w = rl_sock_writev(fd, bases, lens, k);
        if (w == RL_EAGAIN) {
            long long left = deadline < 0 ? 100 : deadline - rl_now_ms();
            if (total < DIRECT_BLOCK_MIN || left <= 0) break;
            if (!unlocked) {
                c->direct_writer = 1;
                rl_mutex_unlock(&c->send_mu);
                unlocked = 1;
            }
            rl_sock_wait(fd, RL_POLLOUT, (int)(left < 100 ? left : 100));
            if (rl_atomic_load(&c->closed, RL_ACQUIRE)) { rc = RL_ECONNLOST; break; }
            continue;
        }
        if (w < 0) { rc = RL_ECONNLOST; break; }
        wrote += (uint64_t)w;
        /* drop fully written entries */
        size_t ww = (size_t)w;
        int j = 0;
        while (j < k && ww >= lens[j]) { ww -= lens[j]; j++; }
        if (j < k) { bases[j] = (uint8_t *)bases[j] + ww; lens[j] -= ww; }
        memmove(bases, bases + j, (size_t)(k - j) * sizeof *bases);
        memmove(lens, lens + j, (size_t)(k - j) * sizeof *lens);
        k -= j;
        if (k == 0 && next == iovcnt) { done = 1; break; }
    }
    if (unlocked) {
        rl_mutex_lock(&c->send_mu);
        c->direct_writer = 0;
        c->last_write_ns = rl_mono_ns();
        rl_cond_broadcast(&c->send_cv);
        if (c->closed && !done) rc = RL_ECONNLOST;
    }
    /* a close() of the node, not a failure of the peer */
    if (rc == RL_ECONNLOST && rl_atomic_load(&n->closing, RL_ACQUIRE)) rc = RL_ECLOSED;
    *sent = wrote;
    return rc;
}

/* A frame body into frame[] after the header room; returns its CRC32C and
 * the frame's length in *len. The caller fills in and encodes the header.
 * A large body is copied and checksummed in one pass over the source; a
 * small one (a few short pieces: keys, scalars) is gathered first and
 * checksummed in one call, which costs less than a call per piece with its
 * byte-wise tail. */
#define BODY_GATHER_MAX 4096
static uint32_t body_copy(uint8_t *frame, const rl_iov *iov, int iovcnt, size_t *len) {
    size_t off = RL_HEADER_SIZE, total = 0;
    uint32_t crc = 0;
    for (int i = 0; i < iovcnt; i++) total += iov[i].len;
    if (total <= BODY_GATHER_MAX) {
        for (int i = 0; i < iovcnt; i++) {
            if (iov[i].len) memcpy(frame + off, iov[i].base, iov[i].len);
            off += iov[i].len;
        }
        crc = rl_crc32c(0, frame + RL_HEADER_SIZE, total);
    } else {
        for (int i = 0; i < iovcnt; i++) {
            crc = rl_crc32c_copy(crc, frame + off, iov[i].base, iov[i].len);
            off += iov[i].len;
        }
    }
    *len = off;
    return crc;
}

/* Actor, rel_mu held: ask the I/O thread for body_copy(frame, iov, iovcnt).
 * iov[] and its bytes must stay valid until copy_job_wait returns. */
static void copy_job_post(rl_node *n, uint8_t *frame, const rl_iov *iov, int iovcnt) {
    rl_mutex_lock(&n->copy.mu);
    n->copy.frame = frame;
    n->copy.src = iov;
    n->copy.nsrc = iovcnt;
    rl_atomic_store(&n->copy.state, COPY_POSTED, RL_RELEASE);
    rl_mutex_unlock(&n->copy.mu);
    rl_waker_wake(&n->waker);
}

/* I/O thread, holding no lock: make the copy posted, if any. */
static void copy_job_run(rl_node *n) {
    if (rl_atomic_load(&n->copy.state, RL_ACQUIRE) != COPY_POSTED) return;
    rl_mutex_lock(&n->copy.mu);
    if (n->copy.state != COPY_POSTED) { rl_mutex_unlock(&n->copy.mu); return; }
    rl_atomic_store(&n->copy.state, COPY_RUNNING, RL_RELAXED);
    uint8_t *frame = n->copy.frame;
    const rl_iov *src = n->copy.src;
    int nsrc = n->copy.nsrc;
    rl_mutex_unlock(&n->copy.mu);
    size_t len;
    uint32_t crc = body_copy(frame, src, nsrc, &len);
    rl_mutex_lock(&n->copy.mu);
    n->copy.crc = crc;
    rl_atomic_store(&n->copy.state, COPY_DONE, RL_RELAXED);
    rl_cond_broadcast(&n->copy.cv);
    rl_mutex_unlock(&n->copy.mu);
}

/* Actor, the poster: the copy is made (here, if the I/O thread has not
 * started it); returns the CRC32C of the bytes copied. */
static uint32_t copy_job_wait(rl_node *n) {
    rl_mutex_lock(&n->copy.mu);
    if (n->copy.state == COPY_POSTED) {
        rl_atomic_store(&n->copy.state, COPY_IDLE, RL_RELAXED);
        rl_mutex_unlock(&n->copy.mu);
        size_t len;
        return body_copy(n->copy.frame, n->copy.src, n->copy.nsrc, &len);
    }
    while (n->copy.state == COPY_RUNNING) rl_cond_wait(&n->copy.cv, &n->copy.mu);
    uint32_t crc = n->copy.crc;
    rl_atomic_store(&n->copy.state, COPY_IDLE, RL_RELAXED);
    rl_mutex_unlock(&n->copy.mu);
    return crc;
}

/* Actor, rel_mu held: the aside copy of frame[] (checksum crc when the
 * sender read the caller's arrays) is made; hold is released. Arrays that
 * changed meanwhile (another thread writing them during the send) give the
 * copy another checksum: the retained header takes it, so the learner
 * rejects what went out directly and gets the copy, intact, on the resend. */
static void copy_aside_done(rl_node *n, uint8_t *frame, uint32_t crc, rl_buf *hold) {
    uint32_t got = copy_job_wait(n);
    rl_header h;
    if (got != crc && rl_header_decode(frame, UINT64_MAX, &h) == RL_OK) {
        h.crc = got;
        rl_header_encode(&h, frame);
    }
    rl_buf_unref(hold);
}

/* Actor: a reliable trajectory that took a slot of sc's region is not
 * retained after all (timed out, closed, out of memory): the slot is free. */
static void shm_unput(rl_conn *sc, const rl_header *h) {
    if (!sc) return;
    rl_shm_release(sc->shm_out, h->ack);
    conn_unref(sc);
}

/* Actor, mu held: a retained shared-memory frame made whole (the data
 * copied back from its slot, the checksum now over all of the body), for a
 * link other than the one whose region holds it: a new connection, maybe
 * to a restarted learner. Returns 0 or an RL_E* (nothing changed). */
static int retained_whole(rl_node *n, retained_frame *rf) {
    static const uint8_t zeros[RL_ALIGN];
    rl_header h;
    if (!rf->shm) return 0;
    if (rl_header_decode(rf->data, UINT64_MAX, &h) != RL_OK) return RL_EPROTO;  /* ours */
    size_t pad = rl_frame_pad(&h);
    rl_iov iov[3] = {{rf->data + RL_HEADER_SIZE, (size_t)h.meta_len},
                     {zeros, pad},
                     {rl_shm_base(rf->shm->shm_out) + rf->shm_off, (size_t)h.data_len}};
    rl_buf *b = rl_buf_new(RL_HEADER_SIZE + (size_t)h.meta_len + pad + (size_t)h.data_len);
    if (!b) return RL_ENOMEM;
    h.crc = body_copy(b->data, iov, 3, &b->len);
    h.flags &= (uint8_t)~RL_FLAG_SHM;
    h.ack = 0;
    rl_header_encode(&h, b->data);
    n->ret_bytes += b->len - rf->len;
    rl_buf_unref(rf->buf);   /* a ring may still hold it */
    rf->buf = b;
    rf->data = b->data;
    rf->len = b->len;
    /* the old link's region is never allocated from again; freed with it */
    conn_unref(rf->shm);
    rf->shm = NULL;
    rf->released = 0;
    n->ret_shm--;
    return 0;
}

/* Actor: the learner gives back slot off of c's region. A reliable frame
 * still retained there keeps it until acknowledged: returns 1 (deferred),
 * 0 (no such frame: free it now) or -1 (given back twice). */
static int shm_release_retained(rl_node *n, rl_conn *c, uint64_t off) {
    int rc = 0;
    rl_mutex_lock(&n->mu);
    /* usually the ack came first, and none is left */
    for (size_t i = 0; i < n->ret_n && n->ret_shm && !rc; i++) {
        retained_frame *r = &n->ret[(n->ret_head + i) % n->ret_cap];
        if (r->shm == c && r->shm_off == off) {
            rc = r->released ? -1 : 1;
            r->released = 1;
        }
    }
    rl_mutex_unlock(&n->mu);
    return rc;
}

/* rel_mu for a reliable send; with nowait only if free at once (returns 0
 * when not taken). A large frame's sender holds it through its blocking
 * write. */
static int rel_lock(rl_node *n, int nowait) {
    if (nowait) return rl_mutex_trylock(&n->rel_mu);
    rl_mutex_lock(&n->rel_mu);
    return 1;
}

/* Actor, reliable session: a trajectory gets the next sequence number and a
 * retained copy (with owner: a reference to the caller's memory), then goes
 * to the connection if there is one. While disconnected it waits in the
 * retained window for the next connection. */
static int send_reliable(rl_node *n, rl_header h, const rl_iov *iov, int iovcnt,
                         uint64_t total, long long deadline, int nowait, rl_buf *owner,
                         uint64_t *owned_seq) {
    int rc = RL_OK;
    /* Same host: the data goes into the link's region, where the slot is
     * the retained copy (kept until acknowledged, even if the learner gives
     * it back sooner); the window and the stream take header and meta. */
    rl_conn *sc = NULL;
    rl_iov wire[8];
    if (h.data_len >= n->cfg.shm_min_bytes) {
        rl_mutex_lock(&n->mu);
        sc = table_find(n, 0, 1);
        if (sc && sc->shm_out) conn_ref(sc);
        else sc = NULL;
        rl_mutex_unlock(&n->mu);
    }
    if (sc) {
        int k = shm_put(sc->shm_out, &h, iov, iovcnt, wire, (int)(sizeof wire / sizeof wire[0]));
        if (k > 0) {
            iov = wire;
            iovcnt = k;
            total = RL_HEADER_SIZE + (uint64_t)h.meta_len;
        } else {
            conn_unref(sc);
            sc = NULL;
        }
    }
    int owned = owner && !sc;   /* the slot is the retained copy, owner or not */
    /* Back-pressure on the un-acked window (not under rel_mu: the reconnect
     * that would free it needs rel_mu). */
    rl_buf *b = NULL;
    uint8_t *frame = NULL;
    rl_mutex_lock(&n->mu);
    n->ret_waiters++;
    while (!n->closing && !n->failed && n->ret_n > 0 &&
           n->ret_bytes + total > n->cfg.retain_max_bytes) {
        if (rl_cond_wait_until(&n->cv, &n->mu, deadline) == ETIMEDOUT) { rc = RL_ETIMEDOUT; break; }
    }
    n->ret_waiters--;
    if (!rc && n->closing) rc = RL_ECLOSED;
    if (!rc && n->failed) rc = RL_ECONNLOST;
    if (!rc && total <= RET_PACK_MAX && !owned) {   /* take room in the chunk */
        rl_buf *ch = n->ret_chunk;
        if (!ch || ch->cap - ch->len < total) {
            ch = rl_buf_new(RET_CHUNK);
            if (ch) {
                rl_buf_unref(n->ret_chunk);
                n->ret_chunk = ch;
            }
        }
        if (ch) {
            b = rl_buf_ref(ch);
            frame = ch->data + ch->len;
            ch->len += (size_t)total;
        }
    }
    rl_mutex_unlock(&n->mu);
    if (rc) { shm_unput(sc, &h); return rc; }

    /* Copy and checksum the body outside every lock; a large one is only
     * checksummed here and copied aside (COPY_ASIDE_MIN). */
    if (!b) {
        b = rl_buf_new(owned ? RL_HEADER_SIZE + (size_t)iovcnt * sizeof(rl_iov) : (size_t)total);
        if (!b) { shm_unput(sc, &h); return RL_ENOMEM; }
        frame = b->data;
    }
    int aside = !sc && !owned && total >= COPY_ASIDE_MIN;
    size_t flen = (size_t)total;
    uint32_t bcrc = 0;
    if (owned) {   /* only the header is ours; the gather list goes beside it */
        memcpy(frame + RL_HEADER_SIZE, iov, (size_t)iovcnt * sizeof(rl_iov));
        b->len = RL_HEADER_SIZE + (size_t)iovcnt * sizeof(rl_iov);
        bcrc = iov_crc(iov, iovcnt);
        if (!rel_lock(n, nowait)) goto busy;
    } else if (aside) {
        /* The I/O thread starts the copy while this thread checksums: the
         * two passes read the arrays at the same time, the later one from
         * cache (W2 reliable, suite A/B: +4% and +8% in the medians of two
         * 16-pair runs). The copy slot is taken under rel_mu. */
        if (!rel_lock(n, nowait)) goto busy;   /* sequence order == ring order */
        copy_job_post(n, frame, iov, iovcnt);
        bcrc = iov_crc(iov, iovcnt);
    } else {
        bcrc = body_copy(frame, iov, iovcnt, &flen);
        if (!rel_lock(n, nowait)) goto busy;
    }
    h.flags |= RL_FLAG_CHECKSUM;
    h.crc = 0;

    rl_mutex_lock(&n->mu);
    h.seq = ++n->next_seq;
    h.crc = bcrc;
    rl_header_encode(&h, frame);
    if (n->ret_n == n->ret_cap) {
        size_t cap = n->ret_cap ? n->ret_cap * 2 : 256;
        retained_frame *v = malloc(cap * sizeof *v);
        if (!v) {
            n->next_seq--;
            rl_mutex_unlock(&n->mu);
            if (aside) copy_job_wait(n);   /* it writes into b */
            rl_mutex_unlock(&n->rel_mu);
            rl_buf_unref(b);
            shm_unput(sc, &h);
            return RL_ENOMEM;
        }
        for (size_t i = 0; i < n->ret_n; i++) v[i] = n->ret[(n->ret_head + i) % n->ret_cap];
        free(n->ret);
        n->ret = v;
        n->ret_cap = cap;
        n->ret_head = 0;
    }
    retained_frame *rf = &n->ret[(n->ret_head + n->ret_n) % n->ret_cap];
    /* takes b's and sc's references */
    *rf = (retained_frame){h.seq, b, frame, flen, 0, 0, sc, h.ack,
                           owned ? rl_buf_ref(owner) : NULL,
                           owned ? (const rl_iov *)(frame + RL_HEADER_SIZE) : NULL,
                           owned ? iovcnt : 0};
    n->ret_n++;
    if (sc) n->ret_shm++;
    n->ret_bytes += flen;
    rl_conn *c = table_find(n, 0, 1);
    /* reconnected since the slot was taken: this link goes without it (on
     * failure it gets nothing; the gap makes the learner reconnect) */
    if (c && rf->shm && rf->shm != c && retained_whole(n, rf) != 0) c = NULL;
    /* What the ring takes if the socket does not take it all now: the
     * frame cannot be acknowledged (and freed) before it is written. */
    retained_frame snap = *rf;
    if (c) {
        conn_ref(c);
        rf->queued = 1;
        frame = rf->data;
        total = rf->len;
    }
    /* the copy's own reference: an ack may free the frame before it is done */
    rl_buf *hold = aside ? rl_buf_ref(b) : NULL;
    rl_mutex_unlock(&n->mu);
    STAT_ADD(n, st_sent, 1);

    if (c) {
        int wake = 0;
        rl_mutex_lock(&c->send_mu);
        uint64_t sent = 0;
        /* the header is in frame[] already, where the copy does not write */
        if ((aside || owned) && !c->closed && c->ring.bytes == 0 && !c->direct_writer)
            direct_write(n, c, frame, iov, iovcnt, total, deadline, rl_mono_ns(), &sent);
        if (aside) {
            copy_aside_done(n, frame, bcrc, hold);
            aside = 0;
        }
        if (!c->closed && sent == total) {
            CONN_COUNT(c, msgs_out, frame_bytes_out, total);
            c->last_seq = h.seq;
        } else if (!c->closed) {
            int had_out = c->want_out;
            long long t = rl_mono_ns();
            int batch = batch_join(c, h.kind, total, t);
            /* the ring shares the retained buffer: no second copy */
            if (ring_put_retained(c, &snap, sent) == 0) {
                CONN_COUNT(c, msgs_out, frame_bytes_out, total);
                c->last_seq = h.seq;
                if (batch_due(c, batch, t) && ring_flush_locked(c))
                    c->want_out = 1;   /* the I/O thread sees the error */
                /* A large frame is written out by this thread, as the
                 * unreliable direct write does: handing the rest to the I/O
                 * thread costs two wake-ups and reads the retained copy on
                 * the other core. Until the deadline; then the I/O thread. */
                while (total >= DIRECT_BLOCK_MIN && c->ring.bytes > 0 && !c->closed &&
                       !rl_atomic_load(&n->closing, RL_ACQUIRE)) {
                    long long left = deadline < 0 ? 100 : deadline - rl_now_ms();
                    if (left <= 0) break;
                    int fd = c->fd;
                    rl_mutex_unlock(&c->send_mu);
                    rl_sock_wait(fd, RL_POLLOUT, (int)(left < 100 ? left : 100));
                    rl_mutex_lock(&c->send_mu);
                    if (c->closed || ring_flush_locked(c)) { c->want_out = 1; break; }
                }
                if (c->ring.bytes > 0) {
                    c->want_out = 1;
                    wake = !had_out;
                }
            }
        }
        if (held_release(c)) wake = 1;   /* control frames due during our direct write */
        rl_mutex_unlock(&c->send_mu);
        if (wake) rl_waker_wake(&n->waker);   /* after the unlock, as in rl_node_send */
        conn_unref(c);
    }
    if (aside) copy_aside_done(n, frame, bcrc, hold);
    rl_mutex_unlock(&n->rel_mu);
    if (owned_seq) *owned_seq = owned ? h.seq : 0;
    return RL_OK;
busy:   /* nowait, and another sender holds rel_mu (maybe through a long write) */
    rl_buf_unref(b);
    shm_unput(sc, &h);
    return RL_ETIMEDOUT;
}

int rl_node_send(rl_node *n, uint64_t peer_id, const rl_header *hin,
                 const rl_iov *iov, int iovcnt, int timeout_ms) {
    return rl_node_send_owned(n, peer_id, hin, iov, iovcnt, timeout_ms, NULL, NULL);
}

int rl_node_send_owned(rl_node *n, uint64_t peer_id, const rl_header *hin,
                       const rl_iov *iov, int iovcnt, int timeout_ms, rl_buf *owner,
                       uint64_t *owned_seq) {
    if (owned_seq) *owned_seq = 0;
    uint8_t hdr[RL_HEADER_SIZE];
    rl_header h = *hin;
    uint64_t body = 0;
    for (int i = 0; i < iovcnt; i++) body += iov[i].len;
    if (body != h.meta_len + rl_frame_pad(&h) + h.data_len) return RL_EINVAL;
    uint64_t total = RL_HEADER_SIZE + body;
    if (total > n->cfg.limits.max_message_bytes) return RL_ETOOBIG;
    h.seq = 0;
    h.ack = 0;
    h.flags = 0;

    long long deadline = to_deadline(timeout_ms);
    rl_mutex_lock(&n->mu);
    if (n->closing) { rl_mutex_unlock(&n->mu); return RL_ECLOSED; }
    if (n->cfg.role == RL_ROLE_ACTOR && n->reliable && h.kind == RL_KIND_TRAJ) {
        rl_mutex_unlock(&n->mu);
        return send_reliable(n, h, iov, iovcnt, total, deadline, timeout_ms == 0, owner, owned_seq);
    }
    rl_conn *c = table_find(n, peer_id, n->cfg.role == RL_ROLE_ACTOR);
    if (!c) {
        int rc = n->cfg.role == RL_ROLE_ACTOR ? RL_ECONNLOST : RL_ENOCONN;
        rl_mutex_unlock(&n->mu);
        return rc;
    }
    conn_ref(c);
    rl_mutex_unlock(&n->mu);
    rl_iov wire[8];
    if (c->shm_out && h.kind == RL_KIND_TRAJ && h.data_len >= n->cfg.shm_min_bytes) {
        int k = shm_put(c->shm_out, &h, iov, iovcnt, wire, (int)(sizeof wire / sizeof wire[0]));
        if (k > 0) {   /* the stream carries the header and the meta only */
            iov = wire;
            iovcnt = k;
            total = RL_HEADER_SIZE + (uint64_t)h.meta_len;
        }
    }
    seal_header(&h, hdr, c->reliable, iov, iovcnt);
    STAT_ADD(n, st_sent, 1);

    int rc = RL_OK, wake = 0;
    rl_mutex_lock(&c->send_mu);
    /* Back-pressure: wait for room, but always admit a frame into an empty
     * ring, so a message larger than the bound still goes out. Also wait
     * while another sender writes a large frame directly. */
    while (!c->closed && !rl_atomic_load(&n->closing, RL_ACQUIRE) &&
           (c->direct_writer ||
            (c->ring.bytes > 0 && c->ring.bytes + total > n->cfg.sendq_max_bytes))) {
        if (rl_cond_wait_until(&c->send_cv, &c->send_mu, deadline) == ETIMEDOUT) {
            rc = RL_ETIMEDOUT;
            goto out;
        }
    }
    if (rl_atomic_load(&n->closing, RL_ACQUIRE)) { rc = RL_ECLOSED; goto out; }
    if (c->closed) { rc = RL_ECONNLOST; goto out; }
    int had_out = c->want_out;   /* set => the I/O thread already watches for POLLOUT */
    long long t = rl_mono_ns();
    int batch = batch_join(c, h.kind, total, t);
    uint64_t sent = 0;
    if (c->ring.bytes == 0 && !batch) {
        /* Direct write from the caller's memory: no copy, no hand-off. */
        rc = direct_write(n, c, hdr, iov, iovcnt, total, deadline, t, &sent);
        if (rc != RL_OK || sent == total) goto out;
    }
    /* Copy what the socket did not take into the ring, whole or not at
     * all (a part of a frame would corrupt the stream). */
    uint8_t *dst = ring_put_room(c, (size_t)(total - sent));
    if (!dst) {
        rc = RL_ENOMEM;
        /* the frame's start is on the wire: this stream cannot go on (the
         * I/O thread sees the shut socket and drops the connection) */
        if (sent > 0) rl_sock_shutdown(c->fd, RL_SHUT_RDWR);
    } else {
        if (sent < RL_HEADER_SIZE) {
            memcpy(dst, hdr + sent, RL_HEADER_SIZE - (size_t)sent);
            dst += RL_HEADER_SIZE - (size_t)sent;
        }
        sent = sent > RL_HEADER_SIZE ? sent - RL_HEADER_SIZE : 0;
        for (int j = 0; j < iovcnt; j++) {
            if (sent >= iov[j].len) { sent -= iov[j].len; continue; }
            memcpy(dst, (const uint8_t *)iov[j].base + sent, iov[j].len - (size_t)sent);
            dst += iov[j].len - (size_t)sent;
            sent = 0;
        }
        ring_mark_message(c);
    }
    if (rc == RL_OK && batch_due(c, batch, t) && ring_flush_locked(c)) rc = RL_ECONNLOST;
    if (c->ring.bytes > 0) {
        c->want_out = 1;
        wake = !had_out;
    }
out:
    if (rc == RL_OK) CONN_COUNT(c, msgs_out, frame_bytes_out, total);
    if (held_release(c)) wake = 1;   /* control frames due during our direct write */
    rl_mutex_unlock(&c->send_mu);
    /* after the unlock: woken under send_mu, the I/O thread would run
     * (on this core, preempting us) only to block on it */
    if (wake) rl_waker_wake(&n->waker);
    /* Not sent whole (timed out, closed): the learner never sees the slot,
     * so it is ours again. Kept, it would stop reuse of the region for good
     * (slots are reused in ring order), and the binding's 100 ms retries
     * would each take another. */
    if (rc != RL_OK && (h.flags & RL_FLAG_SHM)) rl_shm_release(c->shm_out, h.ack);
    conn_unref(c);
    return rc;
}

/* ---- parameters -------------------------------------------------------- */

/* A whole parameters frame: header (with the body's CRC32C, computed while
 * copying: one pass over the source) and body. */
static rl_buf *params_frame(rl_header h, const rl_iov *iov, int iovcnt) {
    uint64_t total = RL_HEADER_SIZE;
    for (int i = 0; i < iovcnt; i++) total += iov[i].len;
    rl_buf *b = rl_buf_new((size_t)total);
    if (!b) return NULL;
    uint32_t crc = body_copy(b->data, iov, iovcnt, &b->len);
    h.flags = (uint8_t)((h.flags & ~RL_FLAG_SHM) | RL_FLAG_CHECKSUM);
    h.seq = h.ack = 0;
    h.crc = crc;
    rl_header_encode(&h, b->data);
    return b;
}

/* Learner, mu held: the newest parameters as a whole frame, made from the
 * shared slot they are in (for a peer that cannot have the slot). */
static rl_buf *params_whole(rl_node *n) {
    static const uint8_t zeros[RL_ALIGN];
    rl_header h;
    if (!n->pshm_frame || !n->pshm ||
        rl_header_decode(n->pshm_frame->data, UINT64_MAX, &h) != RL_OK)
        return NULL;
    rl_iov iov[3] = {{n->pshm_frame->data + RL_HEADER_SIZE, h.meta_len},
                     {zeros, rl_frame_pad(&h)},
                     {rl_shm_base(n->pshm) + h.ack, (size_t)h.data_len}};
    return params_frame(h, iov, 3);
}

/* Slot holds (mu held; a connection's bits also under its send_mu). */
static void pslot_unref(rl_node *n, int i) {
    if (--n->pslot[i].refs == 0) {
        rl_shm_release(n->pshm, n->pslot[i].off);
        n->pslot[i].used = 0;
    }
}

static void pshm_hold(rl_node *n, rl_conn *c, int i) {
    c->pshm_held |= (uint64_t)1 << i;
    n->pslot[i].refs++;
}

static void pshm_unhold(rl_node *n, rl_conn *c, int i) {
    uint64_t bit = (uint64_t)1 << i;
    if (c->pshm_id != n->pshm_id || !(c->pshm_held & bit)) return;
    c->pshm_held &= ~bit;
    pslot_unref(n, i);
}

/* Learner, mu held: a slot for data_len bytes of parameters in the node's
 * region (made or replaced as needed), held once for the node; -1 when
 * they go whole: shared memory off or unavailable, too small a message, no
 * same-host actor that maps regions, or no room. */
static int pshm_reserve(rl_node *n, uint64_t data_len) {
    if (!SHM_AVAILABLE || n->cfg.shm_bytes == 0 || data_len == 0 ||
        data_len < n->cfg.shm_min_bytes || data_len > SHM_MAX_REGION / 3)
        return -1;
    int any = 0;
    for (int i = 0; i < n->nconns && !any; i++)
        any = n->conns[i]->state == CONN_OPEN && n->conns[i]->peer_shm;
    if (!any) return -1;
    /* room for two versions while actors still hold the previous one */
    uint64_t least = 2 * data_len + ((uint64_t)1 << 16);
    if (!n->pshm || n->pshm_stale || rl_shm_size(n->pshm) < least) {
        uint64_t size = 3 * data_len;
        if (size < n->cfg.shm_bytes) size = n->cfg.shm_bytes;
        if (size > SHM_MAX_REGION) size = SHM_MAX_REGION;
        rl_shm_region *r = rl_shm_create((size_t)size);
        if (!r) return -1;
        /* Actors still map the old one for what they hold; we never write
         * it again (the stale case: a departed actor may still read it). */
        rl_shm_destroy(n->pshm);
        n->pshm = r;
        n->pshm_id++;
        n->pshm_stale = 0;
        memset(n->pslot, 0, sizeof n->pslot);
        n->pshm_latest = -1;
        rl_buf_unref(n->pshm_frame);
        n->pshm_frame = NULL;
    }
    int i = 0;
    while (i < PSLOTS && n->pslot[i].used) i++;
    uint64_t off;
    if (i == PSLOTS || rl_shm_alloc(n->pshm, (size_t)data_len, &off) != 0) return -1;
    n->pslot[i].off = off;
    n->pslot[i].refs = 1;
    n->pslot[i].used = 1;
    return i;
}

/* Learner, mu and c->send_mu held: give c the node's region, once; only
 * with nothing queued before it (the descriptor must go with these bytes,
 * in stream order). Returns 0 if c has it. */
static int pshm_offer(rl_node *n, rl_conn *c) {
    if (c->pshm_id == n->pshm_id) return 0;
    if (c->closed || c->ring.bytes || c->direct_writer) return -1;
    /* A frame not started yet may name a slot of an earlier region: it must
     * not follow the new one (the peer would read it there). A publish is
     * replacing it anyway. */
    if (c->pshm_pending >= 0) pshm_unhold(n, c, c->pshm_pending);
    c->pshm_pending = -1;
    rl_buf_unref(c->pending_params);
    c->pending_params = NULL;
    rl_header h;
    uint8_t out[RL_HEADER_SIZE];
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_SHM_REGION;
    h.seq = 1;                  /* shared slots: map it copy-on-write */
    h.ack = n->pshm_id;
    h.ref = rl_shm_size(n->pshm);
    seal_header(&h, out, c->reliable, NULL, 0);
    ssize_t w = rl_sock_write_fd(c->fd, out, sizeof out, rl_shm_fd(n->pshm));
    if (w <= 0) return -1;
    /* the descriptor went with the first byte; the rest waits its turn */
    if ((size_t)w < sizeof out && ring_put_copy(c, out + w, sizeof out - (size_t)w) == 0)
        c->want_out = 1;
    c->pshm_id = n->pshm_id;
    c->pshm_held = 0;
    c->pshm_pending = -1;
    return 0;
}

/* Learner, mu and c->send_mu held: make the newest parameters c's next
 * frame, replacing one it has not started: the shared slot when c has (or
 * can now be given) the region, else the whole frame. */
static void give_params(rl_node *n, rl_conn *c, int shared) {
    if (c->pshm_pending >= 0) pshm_unhold(n, c, c->pshm_pending);
    c->pshm_pending = -1;
    rl_buf_unref(c->pending_params);   /* a version it never started: skip it */
    c->pending_params = NULL;
    if (shared && n->pshm_frame && c->peer_shm && pshm_offer(n, c) == 0) {
        c->pending_params = rl_buf_ref(n->pshm_frame);
        pshm_hold(n, c, n->pshm_latest);
        c->pshm_pending = n->pshm_latest;
        return;
    }
    if (!n->params && n->pshm_frame) n->params = params_whole(n);
    if (n->params) c->pending_params = rl_buf_ref(n->params);
}

/* Learner, I/O thread: the actor is done with a slot of the node's region. */
static int pshm_release(rl_node *n, rl_conn *c, const rl_header *h, const char **why) {
    int rc = 0;
    rl_mutex_lock(&n->mu);
    rl_mutex_lock(&c->send_mu);
    if (h->ack == 0 || c->pshm_id == 0 || h->ack > c->pshm_id) {
        rc = RL_EPROTO;
    } else if (h->ack == c->pshm_id && c->pshm_id == n->pshm_id) {
        int i = 0;
        while (i < PSLOTS && !(n->pslot[i].used && n->pslot[i].off == h->ref &&
                               (c->pshm_held >> i & 1) && i != c->pshm_pending))
            i++;
        if (i == PSLOTS) rc = RL_EPROTO;
        else pshm_unhold(n, c, i);
    }   /* else a slot of a region since replaced: nothing to give back */
    rl_mutex_unlock(&c->send_mu);
    rl_mutex_unlock(&n->mu);
    if (rc) *why = "shared-memory release of a slot this peer was not given";
    return rc;
}

/* Learner, mu held, c leaving: what it held goes back; if it had been sent
 * a slot, the region is never written again (its process may still read
 * that slot) and the next publish makes a new one. */
static void pshm_leave(rl_node *n, rl_conn *c) {
    rl_mutex_lock(&c->send_mu);
    if (c->pshm_id && c->pshm_id == n->pshm_id) {
        uint64_t sent = c->pshm_held;
        if (c->pshm_pending >= 0) sent &= ~((uint64_t)1 << c->pshm_pending);
        if (sent) n->pshm_stale = 1;
        for (int i = 0; i < PSLOTS; i++)
            if (c->pshm_held >> i & 1) pshm_unhold(n, c, i);
    }
    c->pshm_held = 0;
    c->pshm_pending = -1;
    rl_mutex_unlock(&c->send_mu);
}

int rl_node_publish(rl_node *n, const rl_header *hin, const rl_iov *iov, int iovcnt) {
    rl_header h = *hin;
    uint64_t body = 0;
    for (int i = 0; i < iovcnt; i++) body += iov[i].len;
    if (body != h.meta_len + rl_frame_pad(&h) + h.data_len) return RL_EINVAL;
    uint64_t total = RL_HEADER_SIZE + body;
    if (total > n->cfg.limits.max_message_bytes) return RL_ETOOBIG;
    if (n->cfg.role != RL_ROLE_LEARNER) return RL_EINVAL;
    h.flags = 0;
    h.seq = h.ack = 0;

    rl_mutex_lock(&n->pub_mu);
    rl_mutex_lock(&n->mu);
    if (n->closing) {
        rl_mutex_unlock(&n->mu);
        rl_mutex_unlock(&n->pub_mu);
        return RL_ECLOSED;
    }
    /* Which peers take the data from a shared slot (offered the region now
     * if they do not have it yet), and whether anyone needs it whole. */
    uint64_t mark = ++n->pub_count;
    int slot = pshm_reserve(n, h.data_len), whole = slot < 0;
    for (int i = 0; i < n->nconns; i++) {
        rl_conn *c = n->conns[i];
        if (c->state != CONN_OPEN) continue;
        rl_mutex_lock(&c->send_mu);
        if (slot >= 0 && c->peer_shm && pshm_offer(n, c) == 0) c->pub_mark = mark;
        else whole = 1;
        rl_mutex_unlock(&c->send_mu);
    }
    rl_mutex_unlock(&n->mu);

    /* The copies, outside mu: only a publish writes or replaces the region. */
    rl_buf *full = NULL, *small = NULL;
    int rc = RL_OK;
    if (slot >= 0) {
        rl_iov wire[8];
        rl_header sh = h;
        int k = shm_copy_in(rl_shm_base(n->pshm) + n->pslot[slot].off, &h, iov, iovcnt, wire,
                            (int)(sizeof wire / sizeof wire[0]));
        small = k < 0 ? NULL : rl_buf_new(RL_HEADER_SIZE + (size_t)h.meta_len);
        if (small) {
            sh.crc = body_copy(small->data, wire, k, &small->len);
            sh.flags = RL_FLAG_SHM | RL_FLAG_CHECKSUM;
            sh.ack = n->pslot[slot].off;
            rl_header_encode(&sh, small->data);
        } else {
            whole = 1;
        }
    }
    if (whole) {
        full = params_frame(h, iov, iovcnt);
        if (!full) rc = RL_ENOMEM;
    }

    rl_mutex_lock(&n->mu);
    if (n->closing) rc = RL_ECLOSED;
    if (rc == RL_OK && !small && slot >= 0) {   /* the slot frame failed: all whole */
        pslot_unref(n, slot);
        slot = -1;
    }
    if (rc != RL_OK) {
        if (slot >= 0) pslot_unref(n, slot);
        rl_mutex_unlock(&n->mu);
        rl_mutex_unlock(&n->pub_mu);
        rl_buf_unref(full);
        rl_buf_unref(small);
        return rc;
    }
    STAT_ADD(n, st_sent, 1);
    rl_buf_unref(n->params);
    n->params = full;   /* the node's reference (NULL: made from the slot if needed) */
    if (n->pshm_latest >= 0) pslot_unref(n, n->pshm_latest);
    rl_buf_unref(n->pshm_frame);
    n->pshm_latest = slot;   /* the node's hold, taken in pshm_reserve */
    n->pshm_frame = small;
    int wake = 0;
    for (int i = 0; i < n->nconns; i++) {
        rl_conn *c = n->conns[i];
        if (c->state != CONN_OPEN) continue;
        rl_mutex_lock(&c->send_mu);
        if (!c->closed) {
            give_params(n, c, slot >= 0 && c->pub_mark == mark);
            if (!c->want_out) { c->want_out = 1; wake = 1; }
        }
        rl_mutex_unlock(&c->send_mu);
    }
    rl_mutex_unlock(&n->mu);
    rl_mutex_unlock(&n->pub_mu);
    if (wake) rl_waker_wake(&n->waker);
    return RL_OK;
}

/* ---- shared memory (PROTOCOL.md 2.2) ------------------------------------ */

/* Any thread, from rl_msg_free: the application is done with a message
 * whose data sat in the peer's region: tell the peer the slot is free (if
 * the link still exists). */
static void shm_give_back(rl_msg *m) {
    rl_conn *c = m->shm;
    rl_shm_map *map = m->shm_map;
    m->shm = NULL;
    m->shm_map = NULL;
    if (rl_fork_count() != c->fork_count) {
        /* A forked child dropping arrays it inherited: the link, its locks
         * and its I/O thread are the parent's (a lock held at the fork
         * would never come free here). Only this process's map goes. */
        rl_shm_map_unref(map);
        return;
    }
    /* a copy-on-write map forgets what we wrote before the owner may reuse it */
    rl_shm_map_discard(map, m->hdr.ack, m->hdr.data_len);
    rl_mutex_lock(&c->send_mu);
    if (!c->closed) {
        rl_header h;
        uint8_t out[RL_HEADER_SIZE];
        memset(&h, 0, sizeof h);
        h.kind = RL_KIND_SHM_RELEASE;
        h.ref = m->hdr.ack;
        h.ack = m->shm_id;
        seal_header(&h, out, c->reliable, NULL, 0);
        int had_out = c->want_out;
        if (ring_put_control(c, out) == 0) c->want_out = 1;
        if (!had_out && c->want_out) rl_waker_wake(&c->node->waker);
    }
    rl_mutex_unlock(&c->send_mu);
    rl_shm_map_unref(map);
    conn_unref(c);
}

/* I/O thread: the peer offers its region (the descriptor came with the
 * frame's bytes and waits in c->pending_fd). A region with shared slots
 * (seq bit 0, ack = its id) is mapped copy-on-write, and a newer one of
 * those replaces it: messages in the old one keep their own map. */
static int shm_accept_region(rl_conn *c, const rl_header *h, const char **why) {
    int fd = c->pending_fd;
    c->pending_fd = -1;
    if (fd < 0) { *why = "shared-memory region offered without a file descriptor"; return RL_EPROTO; }
    int shared = (h->seq & 1) != 0;
    const char *bad = NULL;
    if ((h->seq & ~(uint64_t)1) || shared != (h->ack != 0))
        bad = "malformed shared-memory region frame";
    else if (!c->shm_accepts)
        bad = "shared-memory region offered on a connection that did not accept one";
    else if (c->shm_map && !(shared && c->shm_map_shared && h->ack > c->shm_map_id))
        bad = "a second shared-memory region on one connection";
    else if (h->ref > SHM_MAX_REGION)
        bad = "shared-memory region larger than 16 GiB";
    if (bad) {
        rl_shm_close_fd(fd);
        *why = bad;
        return RL_EPROTO;
    }
    /* Private (copy-on-write) when several receivers share the slots, and
     * in a reliable session, where a slot is the sender's retained copy:
     * what our application writes must not change what may be resent. */
    const char *problem = NULL;
    rl_shm_map *map = rl_shm_map_fd(fd, h->ref, shared || c->reliable, &problem);   /* closes fd */
    if (!map) { *why = problem ? problem : "could not map the peer's shared memory"; return RL_EPROTO; }
    rl_shm_map_unref(c->shm_map);
    c->shm_map = map;
    c->shm_map_shared = shared;
    c->shm_map_id = h->ack;
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len, long long deadline);

/* Actor, on a fresh same-host connection whose learner maps regions: make
 * ours and send it. Any failure just leaves the connection without one. */
static void shm_offer_region(rl_node *n, rl_conn *c, long long deadline) {
    size_t size = n->cfg.shm_bytes;
    if ((uint64_t)size > SHM_MAX_REGION) size = (size_t)SHM_MAX_REGION;
    rl_shm_region *r = rl_shm_create(size);
    if (!r) return;
    rl_header h;
    uint8_t out[RL_HEADER_SIZE];
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_SHM_REGION;
    h.ref = rl_shm_size(r);
    seal_header(&h, out, c->reliable, NULL, 0);
    ssize_t w = rl_sock_write_fd(c->fd, out, sizeof out, rl_shm_fd(r));
    if (w > 0 && (size_t)w < sizeof out)   /* the descriptor went with the first byte */
        w = write_all(c->fd, out + w, sizeof out - (size_t)w, deadline) == RL_OK ? (ssize_t)sizeof out : -1;
    if (w == (ssize_t)sizeof out) c->shm_out = r;
    else rl_shm_destroy(r);   /* nothing, or a torn frame the learner will reject */
}

/* ---- receive side (I/O thread) ----------------------------------------- */

/* A complete frame arrived on c: validate and route it. Returns 0, or an
 * RL_E* after which the connection must be dropped (*why set). */
/* Actor: the learner's application has taken everything up to ack. */
static void take_ack(rl_node *n, uint64_t ack) {
    rl_mutex_lock(&n->mu);
    if (ack > n->acked) {
        n->acked = ack;
        while (n->ret_n && n->ret[n->ret_head].seq <= ack) {
            retained_frame *r = &n->ret[n->ret_head];
            n->ret_bytes -= r->len;
            if (r->shm) {
                if (r->released) rl_shm_release(r->shm->shm_out, r->shm_off);
                conn_unref(r->shm);
                n->ret_shm--;
            }
            rl_buf_unref(r->buf);
            rl_buf_unref(r->owner);   /* the caller's memory: theirs again */
            n->ret_head = (n->ret_head + 1) % n->ret_cap;
            n->ret_n--;
        }
        /* only senders held back by a full window (and wait_acked) care */
        if (n->ret_waiters) wake_waiters(n);
    }
    rl_mutex_unlock(&n->mu);
}

/* A header-only control frame (kinds 6-10: rl_header_decode refuses a body
 * on them), handled straight from the receive buffer: no message is
 * allocated for an acknowledgement or a heartbeat. Returns 0, or an RL_E*
 * after which the connection must be dropped (*why set). */
static int control_frame(rl_node *n, rl_conn *c, const rl_header *h, const char **why) {
    /* the checksum of an empty body is 0 */
    if ((h->flags & RL_FLAG_CHECKSUM) && h->crc != 0) {
        *why = "checksum mismatch: a frame was corrupted in transit";
        return RL_EPROTO;
    }
    if (h->kind == RL_KIND_BYE) {
        *why = n->cfg.role == RL_ROLE_ACTOR ? "the learner closed the connection"
                                             : "the actor closed the connection";
        return RL_ECONNLOST;
    }
    if (h->kind == RL_KIND_HEARTBEAT) {
        uint64_t sent = h->ref;
        if (c->sess && sent > c->sess->delivered) {
            *why = "frames were lost in transit (the actor sent more than arrived)";
            return RL_EPROTO;
        }
        return 0;
    }
    if (h->kind == RL_KIND_ACK) {
        uint64_t ack = h->ack;
        if (n->cfg.role != RL_ROLE_ACTOR || !c->reliable) {
            *why = "unexpected acknowledgement";
            return RL_EPROTO;
        }
        take_ack(n, ack);
        return 0;
    }
    if (h->kind == RL_KIND_SHM_REGION) return shm_accept_region(c, h, why);
    if (h->kind == RL_KIND_SHM_RELEASE) {
        if (n->cfg.role == RL_ROLE_LEARNER) return pshm_release(n, c, h, why);
        int held = -1;   /* 1: kept as a retained copy, 0: free it now */
        if (h->ack == 0 && c->shm_out) held = c->reliable ? shm_release_retained(n, c, h->ref) : 0;
        if (held < 0 || (held == 0 && rl_shm_release(c->shm_out, h->ref) != 0)) {
            *why = "shared-memory release of a slot this peer was not given";
            return RL_EPROTO;
        }
        return 0;
    }
    *why = "unknown control frame";
    return RL_EPROTO;
}

static int deliver(rl_node *n, rl_conn *c, rl_msg *m, const char **why) {
    unsigned root = 0;
    int rc;
    int kind = m->hdr.kind;
    /* Integrity first: a corrupted frame must not be interpreted at all. */
    if (m->hdr.flags & RL_FLAG_CHECKSUM) {
        uint32_t crc = m->body_crc_done ? m->body_crc : body_crc(m->frame, (size_t)m->size);
        if (crc != m->hdr.crc) {
            rl_msg_free(m);
            *why = "checksum mismatch: a frame was corrupted in transit";
            return RL_EPROTO;
        }
    } else if (c->reliable) {
        rl_msg_free(m);
        *why = "frame without a checksum on a reliable connection";
        return RL_EPROTO;
    }
    uint8_t *shm_data = NULL;
    if (m->hdr.flags & RL_FLAG_SHM) {   /* the data is in the peer's region */
        if (!c->shm_map) {
            rl_msg_free(m);
            *why = "shared-memory frame from a peer that offered no region";
            return RL_EPROTO;
        }
        if (!rl_shm_map_holds(c->shm_map, m->hdr.ack, m->hdr.data_len)) {
            rl_msg_free(m);
            *why = "shared-memory frame outside the peer's region";
            return RL_EPROTO;
        }
        shm_data = rl_shm_map_base(c->shm_map) + m->hdr.ack;
    }
    rl_session *sess = NULL;
    if (n->cfg.role == RL_ROLE_LEARNER && kind == RL_KIND_TRAJ && c->sess) {
        sess = c->sess;
        uint64_t seq = m->hdr.seq;
        if (seq == 0) { rl_msg_free(m); *why = "unsequenced trajectory on a reliable connection"; return RL_EPROTO; }
        if (seq <= sess->delivered) {   /* resent across a reconnection: already delivered */
            rl_msg_free(m);
            STAT_ADD(n, st_duplicates, 1);
            return 0;
        }
        if (seq != sess->delivered + 1) { rl_msg_free(m); *why = "sequence gap in a reliable session"; return RL_EPROTO; }
    } else if (m->hdr.seq != 0) {
        rl_msg_free(m);
        *why = "unexpected sequence number";
        return RL_EPROTO;
    }
    rc = rl_meta_validate(rl_msg_meta(m), m->hdr.meta_len, m->hdr.data_len, &n->cfg.limits,
                          &root, why);
    if (rc) { rl_msg_free(m); return rc; }
    if (root != RL_T_DICT) { rl_msg_free(m); *why = "message root is not a dict"; return RL_EPROTO; }
    if (shm_data) {   /* from here on, freeing m gives the slot back */
        m->data = shm_data;
        m->shm = conn_ref(c);
        m->shm_map = rl_shm_map_ref(c->shm_map);
        m->shm_id = c->shm_map_id;
    }

    int qi = -1;
    if (n->cfg.role == RL_ROLE_LEARNER) {
        if (kind == RL_KIND_TRAJ) qi = RL_Q_TRAJ;
        else if (kind == RL_KIND_REQUEST) qi = RL_Q_REQUEST;
    } else {
        if (kind == RL_KIND_PUSH) qi = RL_Q_PUSH;
        else if (kind == RL_KIND_REPLY) qi = RL_Q_REPLY;
        else if (kind == RL_KIND_PARAMS) qi = -2;
    }
    if (qi == -1) {
        rl_msg_free(m);
        *why = "unexpected frame kind for this direction";
        return RL_EPROTO;
    }
    if (sess) {
        sess->delivered = m->hdr.seq;
        m->session = sess;
        rl_atomic_add(&sess->queued, 1, RL_RELAXED);
        if (m->hdr.flags & RL_FLAG_REDELIVERED) STAT_ADD(n, st_redelivered, 1);
    }
    STAT_ADD(n, st_received, 1);
    CONN_COUNT(c, msgs_in, frame_bytes_in, m->size);
    if (qi == RL_Q_TRAJ || qi == RL_Q_REQUEST || qi == RL_Q_PUSH) {
        /* Batched: flush_pending hands a whole read's worth over under one lock. */
        msgq *p = &n->pend[qi];
        m->next = NULL;
        if (p->tail) p->tail->next = m; else p->head = m;
        p->tail = m;
        p->count++;
        p->bytes += m->size;
        n->npend++;
        return 0;
    }
    rl_mutex_lock(&n->mu);
    if (qi == RL_Q_REPLY) {
        for (int i = 0; i < n->ncancelled; i++) {
            if (n->cancelled[i] == m->hdr.ref) {
                n->cancelled[i] = n->cancelled[--n->ncancelled];
                rl_mutex_unlock(&n->mu);
                rl_msg_free(m);
                return 0;
            }
        }
    }
    if (qi == -2) {
        if (m->hdr.ref > n->params_newest) n->params_newest = m->hdr.ref;
        if (!n->params_in_version || m->hdr.ref > n->params_in_version || !n->params_in) {
            rl_msg_free(n->params_in);
            n->params_in = m;
            n->params_in_version = m->hdr.ref;
        } else {
            rl_msg_free(m);
        }
    } else {
        q_push(n, qi, m);
    }
    wake_waiters(n);
    rl_mutex_unlock(&n->mu);
    return 0;
}

/* I/O thread: move the frames gathered by deliver() into the shared queues,
 * waking receivers once. */
static void flush_pending(rl_node *n) {
    if (!n->npend) return;
    rl_mutex_lock(&n->mu);
    for (int qi = 0; qi < RL_NQUEUES; qi++) {
        msgq *p = &n->pend[qi], *q = &n->q[qi];
        if (!p->head) continue;
        if (q->tail) q->tail->next = p->head; else q->head = p->head;
        q->tail = p->tail;
        q->count += p->count;
        q->bytes += p->bytes;
        n->in_count += p->count;
        n->in_bytes += p->bytes;
        memset(p, 0, sizeof *p);
    }
    n->npend = 0;
    wake_waiters(n);
    rl_mutex_unlock(&n->mu);
}

/* Learner: find or create an actor's session (under node->mu). A new one
 * starts from what the actor says was already taken (after a learner restart
 * that is all this learner can know). Returns NULL when the table is full of
 * sessions that still have queued messages. */
static rl_session *session_get(rl_node *n, uint64_t id, uint64_t resume) {
    for (int i = 0; i < n->nsessions; i++)
        if (n->sessions[i]->id == id) return n->sessions[i];
    if (n->nsessions >= MAX_SESSIONS) {
        int victim = -1;
        for (int i = 0; i < n->nsessions; i++) {
            rl_session *s = n->sessions[i];
            if (s->attached || rl_atomic_load(&s->queued, RL_RELAXED)) continue;
            if (victim < 0 || s->detached_ms < n->sessions[victim]->detached_ms) victim = i;
        }
        if (victim < 0) return NULL;
        free(n->sessions[victim]);
        n->sessions[victim] = n->sessions[--n->nsessions];
    }
    if (n->nsessions == n->capsessions) {
        int cap = n->capsessions ? n->capsessions * 2 : 16;
        rl_session **v = realloc(n->sessions, (size_t)cap * sizeof *v);
        if (!v) return NULL;
        n->sessions = v;
        n->capsessions = cap;
    }
    rl_session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->id = id;
    s->delivered = s->consumed = s->ack_sent = resume;
    n->sessions[n->nsessions++] = s;
    return s;
}

/* The learner's hello as this node would send it (resume_seq filled later). */
static void learner_hello(rl_node *n, rl_conn *c, rl_hello *mine) {
    memset(mine, 0, sizeof *mine);
    mine->version = RL_PROTOCOL_VERSION;
    mine->role = RL_ROLE_LEARNER;
    c->shm_accepts = c->local && SHM_AVAILABLE;
    mine->flags = (uint8_t)((n->cfg.reliable ? RL_HELLO_RELIABLE : 0) |
                            (n->cfg.auth_key_len ? RL_HELLO_AUTH : 0) |
                            (c->shm_accepts ? RL_HELLO_SHM : 0));
    mine->node_id = n->id;
    mine->max_message = (uint32_t)(n->cfg.limits.max_message_bytes >> 20);
    mine->retry_attempts = n->cfg.retry_attempts;
}

/* Both proofs of the authentication exchange (PROTOCOL.md 3.5):
 * HMAC-SHA256(key, label || 0x00 || actor hello || actor nonce ||
 *             learner hello || learner nonce). */
static void auth_proof(const rl_node *n, const char *label, const uint8_t actor_hs[2 * RL_HELLO_SIZE],
                       const uint8_t learner_hs[2 * RL_HELLO_SIZE], uint8_t out[RL_SHA256_SIZE]) {
    rl_hmac m;
    rl_hmac_init(&m, n->cfg.auth_key, n->cfg.auth_key_len);
    rl_hmac_update(&m, label, strlen(label) + 1);
    rl_hmac_update(&m, actor_hs, 2 * RL_HELLO_SIZE);
    rl_hmac_update(&m, learner_hs, 2 * RL_HELLO_SIZE);
    rl_hmac_final(&m, out);
}
#define AUTH_LABEL_LEARNER "rlink-auth-v1 learner"
#define AUTH_LABEL_ACTOR "rlink-auth-v1 actor"

/* Queue bytes on a handshaking connection and write them (send_mu taken). */
static int conn_send_now(rl_conn *c, const void *p, size_t len) {
    rl_mutex_lock(&c->send_mu);
    int rc = ring_put_copy(c, p, len);
    if (!rc) rc = ring_flush_locked(c);
    rl_mutex_unlock(&c->send_mu);
    return rc;
}

/* Learner: the actor proved itself (or no key is configured): open the
 * connection, attach its reliable session, send the final hello. */
static int open_conn(rl_node *n, rl_conn *c, const rl_hello *peer, const char **why) {
    rl_hello mine;
    uint8_t out[RL_HELLO_SIZE];
    learner_hello(n, c, &mine);

    /* The same actor reconnecting replaces its old (possibly half-open) link. */
    rl_mutex_lock(&n->mu);
    rl_conn *old = table_find(n, peer->node_id, 0);
    if (old) conn_ref(old);
    rl_mutex_unlock(&n->mu);
    if (old) {
        if (old != c) conn_drop(n, old, RL_EV_LEFT, RL_ECONNLOST, "replaced by a new connection from the same actor");
        conn_unref(old);
    }

    int reliable = n->cfg.reliable || (peer->flags & RL_HELLO_RELIABLE);
    rl_mutex_lock(&n->mu);
    if (reliable) {
        rl_session *sess = session_get(n, peer->node_id, peer->resume_seq);
        if (!sess) {
            rl_mutex_unlock(&n->mu);
            *why = "too many reliable sessions with messages still queued";
            return RL_ELIMIT;
        }
        sess->attached = 1;
        if (sess->consumed) {   /* the last ack may have died with the old link */
            sess->ack_sent = 0;
            if (!n->ack_dirty) n->ack_first_ms = rl_now_ms();
            n->ack_dirty = 1;
            n->ack_urgent = 1;   /* this thread: its next turn sends it */
        }
        c->sess = sess;
        c->reliable = 1;
        mine.flags |= RL_HELLO_RELIABLE;
        mine.resume_seq = sess->delivered;   /* resend only what follows */
    }
    rl_hello_encode(&mine, out);
    c->peer_id = peer->node_id;
    c->state = CONN_OPEN;
    rl_atomic_store(&c->last_rx_ms, rl_now_ms(), RL_RELAXED);
    push_event(n, RL_EV_JOINED, c->peer_id, 0, "");
    c->peer_shm = c->local && (peer->flags & RL_HELLO_SHM) != 0;

    /* our hello, then the newest parameters (from the shared region if the
     * actor maps it: offered right behind the hello) */
    rl_mutex_lock(&c->send_mu);
    int rc = ring_put_copy(c, out, sizeof out);
    if (!rc) rc = ring_flush_locked(c);
    if (!rc) give_params(n, c, 1);
    rl_mutex_unlock(&c->send_mu);
    rl_mutex_unlock(&n->mu);
    if (!rc) {
        rl_mutex_lock(&c->send_mu);
        rc = ring_flush_locked(c);
        rl_mutex_unlock(&c->send_mu);
    }
    if (rc) { *why = "connection lost during the handshake"; return RL_ECONNLOST; }
    return 0;
}

/* Why rl_hello_decode refused a hello (static text). */
static const char *hello_problem(const uint8_t *hs) {
    if (memcmp(hs, RL_MAGIC, 4) != 0) return "bad handshake: not an rlink peer (no RLNK magic)";
    if (hs[6] != RL_ROLE_ACTOR && hs[6] != RL_ROLE_LEARNER) return "bad handshake: unknown role";
    if (hs[7] & ~(RL_HELLO_RELIABLE | RL_HELLO_AUTH | RL_HELLO_SHM)) return "bad handshake: unknown flag bits";
    return "bad handshake: node_id is 0";
}

/* Learner: c->hs holds the c->hs_need bytes this handshake phase waits for.
 * Returns 0 (the handshake moved on) or an RL_E* with *why set. */
static int handshake_step(rl_node *n, rl_conn *c, const char **why, char *buf, size_t bufsz) {
    int keyed = n->cfg.auth_key_len > 0;
    if (c->hs_phase == HS_PROOF) {
        if (!rl_ct_equal(c->hs, c->hs_expect, RL_SHA256_SIZE)) {
            *why = "authentication failed: the actor's auth_key differs from this learner's";
            return RL_EAUTH;
        }
        return open_conn(n, c, &c->hs_peer, why);
    }
    rl_hello peer, mine;
    int rc = rl_hello_decode(c->hs, &peer);
    uint8_t out[3 * RL_HELLO_SIZE];   /* hello, nonce, proof */
    learner_hello(n, c, &mine);
    rl_hello_encode(&mine, out);
    if (rc == RL_EVERSION) {
        void *b = out;
        size_t l = RL_HELLO_SIZE;
        rl_sock_writev(c->fd, &b, &l, 1);  /* best effort: let the peer name both versions */
        snprintf(buf, bufsz, "peer speaks rlink protocol version %u, this node speaks %u",
                 (unsigned)peer.version, RL_PROTOCOL_VERSION);
        *why = buf;
        return rc;
    }
    if (rc) { *why = hello_problem(c->hs); return rc; }
    if (peer.role != RL_ROLE_ACTOR) { *why = "peer is not an actor"; return RL_EPROTO; }
    int offers = (peer.flags & RL_HELLO_AUTH) != 0;
    if (offers && c->hs_need == RL_HELLO_SIZE) {
        /* Read the actor's nonce first, whatever we do next: closing with
         * it unread would reset the connection, and the actor could lose
         * our hello (which tells it why) to the reset. */
        c->hs_need = 2 * RL_HELLO_SIZE;
        return 0;
    }
    if (keyed != offers) {
        /* Say which side lacks the key (the hello reveals nothing else), then drop. */
        void *b = out;
        size_t l = RL_HELLO_SIZE;
        rl_sock_writev(c->fd, &b, &l, 1);
        *why = keyed ? "authentication failed: the actor has no auth_key and this learner requires one"
                     : "authentication failed: the actor has an auth_key and this learner has none";
        return RL_EAUTH;
    }
    if (!keyed) return open_conn(n, c, &peer, why);
    /* Challenge: our hello and nonce, and our proof of the key. Nothing
     * else (no session state, no parameters) goes out before the actor's
     * proof arrives. */
    if (rl_random_bytes(out + RL_HELLO_SIZE, RL_NONCE_SIZE)) {
        *why = "no source of random numbers for the authentication nonce";
        return RL_ESYS;
    }
    auth_proof(n, AUTH_LABEL_LEARNER, c->hs, out, out + 2 * RL_HELLO_SIZE);
    auth_proof(n, AUTH_LABEL_ACTOR, c->hs, out, c->hs_expect);
    c->hs_peer = peer;
    c->hs_phase = HS_PROOF;
    c->hs_have = 0;
    c->hs_need = RL_SHA256_SIZE;
    if (conn_send_now(c, out, sizeof out)) { *why = "connection lost during the handshake"; return RL_ECONNLOST; }
    return 0;
}

/* Read what is available on c (up to the fairness budget). Returns 0, or an
 * RL_E* after which the connection must be dropped (*why set). */
static int conn_read(rl_node *n, rl_conn *c, const char **why, char *buf, size_t bufsz) {
    size_t budget = READ_BUDGET;
    rl_atomic_store(&c->last_rx_ms, rl_now_ms(), RL_RELAXED);   /* POLLIN: bytes (or the end) arrived */
    while (budget > 0) {
        if (c->state == CONN_HANDSHAKE) {
            ssize_t r = rl_sock_read(c->fd, c->hs + c->hs_have, c->hs_need - c->hs_have);
            if (r == RL_EAGAIN) return 0;
            if (r <= 0) {
                *why = c->hs_phase == HS_PROOF
                           ? "authentication failed: the actor rejected this learner's proof "
                             "(different auth_key) and closed the connection"
                           : "peer closed the connection during the handshake";
                return RL_ECONNLOST;
            }
            c->hs_have += (size_t)r;
            if (c->hs_have < c->hs_need) continue;
            int rc = handshake_step(n, c, why, buf, bufsz);
            if (rc) return rc;
            continue;
        }
        if (c->big) {
            uint64_t left = c->big->size - c->big_have;
            ssize_t r = rl_sock_read(c->fd, c->big->frame + c->big_have,
                                     left > ((uint64_t)1 << 30) ? ((size_t)1 << 30) : (size_t)left);
            if (r == RL_EAGAIN) return 0;
            if (r <= 0) { *why = r == 0 ? "peer closed the connection" : "connection reset"; return RL_ECONNLOST; }
            if (c->big->hdr.flags & RL_FLAG_CHECKSUM)   /* while the bytes are in cache */
                c->big_crc = rl_crc32c(c->big_crc, c->big->frame + c->big_have, (size_t)r);
            c->big_have += (uint64_t)r;
            budget = (size_t)r >= budget ? 0 : budget - (size_t)r;
            if (c->big_have == c->big->size) {
                rl_msg *m = c->big;
                c->big = NULL;
                m->body_crc = c->big_crc;
                m->body_crc_done = 1;
                int rc = deliver(n, c, m, why);
                if (rc) return rc;
            }
            continue;
        }
        ssize_t r;
        if (c->local) {
            /* A peer's region comes as a descriptor attached to the bytes of
             * its SHM_REGION frame (a read may also return earlier frames):
             * it waits for that frame, and a second one before it is an
             * error. */
            int fds[1], nfds = 0;
            r = rl_sock_read_fds(c->fd, c->rx + c->rx_len, RX_CAP - c->rx_len, fds, 1, &nfds);
            if (nfds > 1 || (nfds == 1 && c->pending_fd >= 0)) {
                rl_shm_close_fd(fds[0]);   /* the first stays open even when more came */
                *why = "unexpected file descriptors from the peer";
                return RL_EPROTO;
            }
            if (nfds == 1) c->pending_fd = fds[0];
        } else {
            r = rl_sock_read(c->fd, c->rx + c->rx_len, RX_CAP - c->rx_len);
        }
        if (r == RL_EAGAIN) return 0;
        if (r <= 0) {
            *why = r == 0 ? (c->rx_len ? "peer closed the connection in the middle of a frame"
                                       : "peer closed the connection")
                          : "connection reset";
            return RL_ECONNLOST;
        }
        c->rx_len += (size_t)r;
        budget = (size_t)r >= budget ? 0 : budget - (size_t)r;
        size_t off = 0;
        while (c->rx_len - off >= RL_HEADER_SIZE) {
            rl_header h;
            int rc = rl_header_decode(c->rx + off, n->cfg.limits.max_message_bytes, &h);
            if (rc) {
                *why = rc == RL_ELIMIT ? "frame larger than max_message_bytes"
                                       : "malformed or corrupted frame header";
                return rc;
            }
            if (c->reliable && !(h.flags & RL_FLAG_CHECKSUM)) {
                *why = "frame without a checksum on a reliable connection";
                return RL_EPROTO;
            }
            uint64_t size = rl_frame_size(&h);
            if (h.kind > RL_KIND_PUSH) {   /* header only: size == RL_HEADER_SIZE */
                off += RL_HEADER_SIZE;
                rc = control_frame(n, c, &h, why);
                if (rc) return rc;
                continue;
            }
            if (size <= c->rx_len - off) {
                rl_msg *m = rl_msg_new(&h, c->peer_id);
                if (!m) { *why = "out of memory"; return RL_ENOMEM; }
                memcpy(m->frame, c->rx + off, (size_t)size);
                off += (size_t)size;
                rc = deliver(n, c, m, why);
                if (rc) return rc;
            } else if (size > RX_SMALL_MAX) {
                rl_msg *m = rl_msg_new(&h, c->peer_id);
                if (!m) { *why = "out of memory"; return RL_ENOMEM; }
                size_t have = c->rx_len - off;
                memcpy(m->frame, c->rx + off, have);
                off += have;
                c->big = m;
                c->big_have = have;
                c->big_crc = (h.flags & RL_FLAG_CHECKSUM)
                                 ? rl_crc32c(0, m->frame + RL_HEADER_SIZE, have - RL_HEADER_SIZE)
                                 : 0;
                break;
            } else {
                break;   /* need more bytes */
            }
        }
        if (off) {
            memmove(c->rx, c->rx + off, c->rx_len - off);
            c->rx_len -= off;
        }
    }
    return 0;
}

/* ======================================================================== */
/* the I/O thread                                                           */
/* ======================================================================== */
/* Put a header-only control frame (ACK, HEARTBEAT) on c's ring and mark the
 * connection for writing (send_mu held). */
static void queue_control(rl_node *n, rl_conn *c, unsigned kind, uint64_t ack) {
    rl_header h;
    uint8_t out[RL_HEADER_SIZE];
    memset(&h, 0, sizeof h);
    h.kind = (uint8_t)kind;
    h.ack = ack;
    /* A reliable actor's heartbeat states the last sequence number it put
     * on this link: everything before it in the stream, so a learner that
     * has delivered less knows frames vanished in transit. */
    if (kind == RL_KIND_HEARTBEAT && n->cfg.role == RL_ROLE_ACTOR && c->reliable) h.ref = c->last_seq;
    seal_header(&h, out, c->reliable, NULL, 0);
    if (ring_put_control(c, out) == 0) c->want_out = 1;
    c->last_tx_ms = rl_now_ms();
}

#define ACCEPT_PAUSE_MS 100

static void reject_event(rl_node *n, int code, const char *reason) {
    rl_mutex_lock(&n->mu);
    STAT_ADD(n, st_rejected, 1);
    push_event(n, RL_EV_REJECTED, 0, code, reason);
    rl_mutex_unlock(&n->mu);
}

static void listen_interest(rl_node *n, unsigned events) {
    for (int i = 0; i < n->nlfds; i++) rl_poller_set(n->poller, n->lfds[i], events, NULL);
}

static void accept_all(rl_node *n, int lfd) {
    int local = lfd != n->lfds[0];
    for (;;) {
        int fd = rl_sock_accept(lfd);
        if (fd == RL_EAGAIN) return;
        if (fd < 0) {
            /* Out of file descriptors, typically. The listening socket stays
             * readable, so stop polling it for a moment instead of spinning;
             * the connections waiting in the backlog are accepted later. */
            int e = errno;
            n->accept_paused_until = rl_now_ms() + ACCEPT_PAUSE_MS;
            listen_interest(n, 0);
            reject_event(n, RL_ESYS, e == EMFILE || e == ENFILE
                                         ? "cannot accept connections: out of file descriptors "
                                           "(raise `ulimit -n` or lower max_connections)"
                                         : "cannot accept a connection (accept failed)");
            return;
        }
        rl_mutex_lock(&n->mu);
        int full = n->cfg.max_connections > 0 && n->nconns >= n->cfg.max_connections;
        rl_mutex_unlock(&n->mu);
        if (full) {
            rl_closesocket(fd);
            char why[160];
            snprintf(why, sizeof why, "refused a connection: %d already open (max_connections)",
                     n->cfg.max_connections);
            reject_event(n, RL_ELIMIT, why);
            continue;
        }
        rl_conn *c = conn_new(fd, CONN_HANDSHAKE);
        if (c) c->local = local;
        if (!c) { rl_closesocket(fd); return; }
        c->deadline_ms = rl_now_ms() + n->cfg.handshake_timeout_ms;
        rl_mutex_lock(&n->mu);
        int rc = table_add(n, c);
        rl_mutex_unlock(&n->mu);
        if (rc) { conn_shut(n, c); conn_unref(c); return; }
        c->interest = RL_POLLIN;
        rl_poller_set(n->poller, fd, RL_POLLIN, c);
    }
}

/* Send BYE on every connection, half-close, and wait briefly for each peer to
 * close its side before closing ours: closing a socket that still has unread
 * input makes the kernel send RST, and an RST can destroy data the peer has
 * not read yet. Bounded by max(100 ms, what is left of the flush timeout). */
static void shutdown_all(rl_node *n) {
    rl_header h;
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_BYE;

    rl_mutex_lock(&n->mu);
    int nc = n->nconns;
    rl_conn **cs = n->conns;
    n->conns = NULL;
    n->nconns = n->capconns = 0;
    for (int i = 0; i < nc; i++) cs[i]->state = CONN_CLOSED;
    rl_mutex_unlock(&n->mu);

    rl_pollin *pf = nc > 0 ? calloc((size_t)(unsigned)nc, sizeof *pf) : NULL;
    for (int i = 0; i < nc; i++) {
        rl_conn *c = cs[i];
        if (pf) pf[i].fd = -1;
        rl_mutex_lock(&c->send_mu);
        if (!c->closed && c->fd >= 0) {
            if (c->ring.bytes == 0 && !c->direct_writer) {
                uint8_t sealed[RL_HEADER_SIZE];
                rl_header hb = h;
                seal_header(&hb, sealed, c->reliable, NULL, 0);
                void *b = sealed;
                size_t l = sizeof sealed;
                rl_sock_writev(c->fd, &b, &l, 1);
            }
            rl_sock_shutdown(c->fd, RL_SHUT_WR);
            if (pf) pf[i].fd = c->fd;
        }
        rl_mutex_unlock(&c->send_mu);
    }
    long long left = n->flush_deadline - rl_now_ms();
    long long deadline = rl_now_ms() + (left > 100 ? (left < 2000 ? left : 2000) : 100);
    uint8_t sink[4096];
    for (int open = 1; pf && open;) {
        long long t = deadline - rl_now_ms();
        if (t <= 0) break;
        if (rl_sock_poll_in(pf, nc, (int)t) <= 0) break;
        open = 0;
        for (int i = 0; i < nc; i++) {
            if (pf[i].fd < 0) continue;
            if (pf[i].ready) {
                ssize_t r = rl_sock_read(pf[i].fd, sink, sizeof sink);
                if (r == 0 || (r < 0 && r != RL_EAGAIN)) { pf[i].fd = -1; continue; }
            }
            open = 1;
        }
    }
    free(pf);
    for (int i = 0; i < nc; i++) {
        conn_shut(n, cs[i]);
        conn_unref(cs[i]);
    }
    free(cs);
}

static RL_THREAD_RESULT RL_THREAD_CALL io_main(void *arg) {
    rl_node *n = arg;
    rl_poll_event evs[128];
    char why_buf[160];
    rl_conn **snap = NULL;
    uint64_t *acks = NULL;
    int snap_cap = 0, ack_cap = 0;
    for (;;) {
        long long now = rl_now_ms();
        int closing = rl_atomic_load(&n->closing, RL_ACQUIRE);
        if (closing && n->nlfds) {
            /* Stop listening first: a peer that connected now would sit in
             * the backlog, unanswered, until the close completes. */
            for (int i = 0; i < n->nlfds; i++) {
                rl_poller_del(n->poller, n->lfds[i]);
                rl_closesocket(n->lfds[i]);
            }
            n->nlfds = 0;
            if (n->ipc_path[0]) remove(n->ipc_path);
            n->ipc_path[0] = 0;
        }
        rl_mutex_lock(&n->mu);
        int room = queues_have_room(n);
        if (!room) n->reading_paused = 1;
        if (n->nconns > snap_cap) {
            int cap = n->nconns * 2;
            rl_conn **t = realloc(snap, (size_t)cap * sizeof *t);
            if (t) { snap = t; snap_cap = cap; }
        }
        if (n->nconns > ack_cap) {
            int cap = n->nconns * 2;
            uint64_t *t = realloc(acks, (size_t)cap * sizeof *t);
            if (t) { acks = t; ack_cap = cap; }
        }
        int ns = 0;
        long long next_deadline = -1;
        int pending_out = 0;
        int ack_due = n->ack_dirty && (closing || n->ack_urgent || n->ack_slots ||
                                       now - n->ack_first_ms >= ACK_DELAY_MS);
        if (ack_due) {
            n->ack_dirty = 0;
            n->ack_urgent = 0;
            n->ack_slots = 0;
        }
        /* owed, not yet due: the poll below waits no longer (owed after this
         * snapshot: the 5 ms bound, or the wake-up an urgent ack sends) */
        long long ack_wait = n->ack_dirty ? n->ack_first_ms + ACK_DELAY_MS - now : -1;
        for (int i = 0; i < n->nconns && i < snap_cap && i < ack_cap; i++) {
            rl_conn *c = n->conns[i];
            snap[ns] = conn_ref(c);
            acks[ns] = 0;
            /* acknowledge what the application took since the last ack */
            if (ack_due && c->sess && c->sess->consumed > c->sess->ack_sent) {
                acks[ns] = c->sess->consumed;
                c->sess->ack_sent = c->sess->consumed;
                c->sess->owed_bytes = 0;
                c->sess->owed_slot_bytes = 0;
            }
            ns++;
        }
        rl_mutex_unlock(&n->mu);

        /* Update interest, reap handshakes that took too long, flush. */
        long long now_ns = rl_mono_ns();
        long long batch_wake_ns = -1;   /* the earliest a waiting batch is written by us */
        for (int i = 0; i < ns; i++) {
            rl_conn *c = snap[i];
            if (c->state == CONN_HANDSHAKE && now >= c->deadline_ms) {
                conn_drop(n, c, RL_EV_REJECTED, RL_ETIMEDOUT, "handshake not completed in time");
                conn_unref(c);
                snap[i] = NULL;
                continue;
            }
            if (c->state == CONN_HANDSHAKE &&
                (next_deadline < 0 || c->deadline_ms < next_deadline))
                next_deadline = c->deadline_ms;
            /* Liveness: a peer silent for peer_timeout is gone (blackholed,
             * crashed without a FIN). Not while we ourselves stop reading,
             * and not while unread bytes wait in the socket. */
            if (c->state == CONN_OPEN && n->cfg.peer_timeout_ms > 0 && room && !closing &&
                now - c->last_rx_ms >= n->cfg.peer_timeout_ms) {
                if (rl_sock_unread(c->fd) <= 0) {
                    snprintf(why_buf, sizeof why_buf,
                             "nothing received from the peer for %d ms (peer_timeout)",
                             n->cfg.peer_timeout_ms);
                    conn_drop(n, c, RL_EV_LEFT, RL_ETIMEDOUT, why_buf);
                    conn_unref(c);
                    snap[i] = NULL;
                    continue;
                }
                rl_atomic_store(&c->last_rx_ms, now, RL_RELAXED);
            }
            rl_mutex_lock(&c->send_mu);
            if (c->state == CONN_OPEN && !c->closed) {
                held_release(c);
                if (acks[i]) queue_control(n, c, RL_KIND_ACK, acks[i]);
                else if (!closing && now - c->last_tx_ms >= n->cfg.heartbeat_ms &&
                         c->ring.bytes == 0 && !c->direct_writer)
                    queue_control(n, c, RL_KIND_HEARTBEAT, 0);
            }
            int err = 0;
            /* a batch still building up: its sender writes it, or we do
             * once it is BATCH_GAP_NS old */
            int young = c->batch_ns && now_ns - c->batch_ns < BATCH_GAP_NS;
            if (young && (batch_wake_ns < 0 || c->batch_ns + BATCH_GAP_NS < batch_wake_ns))
                batch_wake_ns = c->batch_ns + BATCH_GAP_NS;
            if (c->want_out && !c->closed && !young) err = ring_flush_locked(c);
            int wo = c->want_out && !young;
            rl_mutex_unlock(&c->send_mu);
            if (err) {
                conn_drop(n, c, RL_EV_LEFT, RL_ECONNLOST, "connection lost while sending");
                conn_unref(c);
                snap[i] = NULL;
                continue;
            }
            pending_out |= wo;
            unsigned want = ((room && !closing) || c->state == CONN_HANDSHAKE ? RL_POLLIN : 0) |
                            (wo ? RL_POLLOUT : 0);
            if (want != c->interest && c->state != CONN_CLOSED) {
                c->interest = want;
                rl_poller_set(n->poller, c->fd, want, c);
            }
        }
        for (int i = 0; i < ns; i++) if (snap[i]) conn_unref(snap[i]);

        if (closing) {
            if (!pending_out || now >= n->flush_deadline) break;
        }

        int timeout = n->cfg.heartbeat_ms > 0 && n->cfg.heartbeat_ms < 1000 ? n->cfg.heartbeat_ms : 1000;
        if (n->nsessions) timeout = timeout < 5 ? timeout : 5;   /* acks stay prompt */
        if (ack_wait >= 0 && ack_wait < timeout) timeout = (int)ack_wait;

        if (next_deadline >= 0) {
            long long t = next_deadline - now;
            if (t < timeout) timeout = t < 0 ? 0 : (int)t;
        }
        if (closing) {
            long long t = n->flush_deadline - now;
            if (t < timeout) timeout = t < 0 ? 0 : (int)t;
        }
        if (n->accept_paused_until) {
            long long t = n->accept_paused_until - now;
            if (t <= 0) {
                n->accept_paused_until = 0;
                listen_interest(n, RL_POLLIN);
            } else if (t < timeout) {
                timeout = (int)t;
            }
        }
        long long timeout_us = timeout * 1000LL;
        if (batch_wake_ns >= 0) {
            long long t = (batch_wake_ns - now_ns + 999) / 1000;
            if (t < timeout_us) timeout_us = t < 0 ? 0 : t;
        }
        int k = rl_poller_wait_us(n->poller, evs, 128, timeout_us);
        copy_job_run(n);   /* first: a sender is writing while it waits for it */
        for (int i = 0; i < k; i++) {
            if (evs[i].fd == n->waker.rfd) { rl_waker_drain(&n->waker); continue; }
            if (!evs[i].ctx && evs[i].fd != n->waker.rfd) {   /* a listening socket */
                if (!closing) accept_all(n, evs[i].fd);
                continue;
            }
            rl_conn *c = evs[i].ctx;
            /* still in the table? (an earlier event this turn may have dropped it) */
            rl_mutex_lock(&n->mu);
            int alive = 0;
            for (int j = 0; j < n->nconns; j++) if (n->conns[j] == c) { alive = 1; break; }
            if (alive) conn_ref(c);
            rl_mutex_unlock(&n->mu);
            if (!alive) continue;
            const char *why = NULL;
            int rc = 0;
            if (evs[i].events & RL_POLLOUT) {
                rl_mutex_lock(&c->send_mu);
                if (!c->closed) rc = ring_flush_locked(c);
                rl_mutex_unlock(&c->send_mu);
                if (rc) why = "connection lost while sending";
            }
            if (!rc && (evs[i].events & RL_POLLIN) && (c->interest & RL_POLLIN)) {
                rc = conn_read(n, c, &why, why_buf, sizeof why_buf);
                flush_pending(n);   /* what arrived before any violation is valid */
            }
            if (rc) {
                int ev = (rc == RL_ECONNLOST) ? RL_EV_LEFT : RL_EV_REJECTED;
                if (c->state == CONN_HANDSHAKE) ev = RL_EV_REJECTED;
                conn_drop(n, c, ev, rc, why ? why : rl_strerror(rc));
            }
            conn_unref(c);
        }
    }
    free(snap);
    free(acks);
    shutdown_all(n);
    return 0;
}

/* ======================================================================== */
/* public API                                                               */
/* ======================================================================== */
int rl_node_create(const rl_config *cfg, rl_node **out) {
    rl_node *n = calloc(1, sizeof *n);
    if (!n) return RL_ENOMEM;
    n->cfg = *cfg;
    n->cfg.auth_key = NULL;
    n->cfg.auth_key_len = 0;
    if (cfg->auth_key_len) {
        n->auth_key = malloc(cfg->auth_key_len);
        if (!n->auth_key) { free(n); return RL_ENOMEM; }
        memcpy(n->auth_key, cfg->auth_key, cfg->auth_key_len);
        n->cfg.auth_key = n->auth_key;
        n->cfg.auth_key_len = cfg->auth_key_len;
    }
    if (n->cfg.limits.max_depth > RL_MAX_DEPTH) n->cfg.limits.max_depth = RL_MAX_DEPTH;
    if (n->cfg.limits.max_ndim > RL_MAX_NDIM) n->cfg.limits.max_ndim = RL_MAX_NDIM;
    n->id = cfg->node_id ? cfg->node_id : random_id();
    n->nlfds = 0;
    n->waker.rfd = n->waker.wfd = -1;
    rl_mutex_init(&n->close_mu);
    rl_mutex_init(&n->mu);
    rl_mutex_init(&n->rel_mu);
    rl_mutex_init(&n->copy.mu);
    rl_cond_init(&n->copy.cv);
    rl_mutex_init(&n->pub_mu);
    n->pshm_latest = -1;
    rl_cond_init(&n->cv);
    if (rl_waker_open(&n->waker) || !(n->poller = rl_poller_new())) {
        rl_waker_close(&n->waker);
        rl_poller_free(n->poller);
        free(n->auth_key);
        free(n);
        return RL_ESYS;
    }
    *out = n;
    return RL_OK;
}

uint64_t rl_node_id(const rl_node *n) { return n->id; }

int rl_node_listen(rl_node *n, const char *host, int port, int *bound_port) {
    if (n->cfg.role != RL_ROLE_LEARNER || n->nlfds > 0 || n->started) return RL_EINVAL;
    int fd = rl_sock_bind(host, port, bound_port);
    if (fd < 0) return fd;
    int lfd = -1;
    if (n->cfg.local) {
        /* Same-host actors find this endpoint by the TCP address they were
         * given. Taken already (another learner on this address in a
         * different way)? Then same-host actors simply use TCP. It listens
         * before TCP does: an actor that reaches the TCP port (retrying
         * while a learner restarts) finds it too, rather than falling back. */
        char name[RL_LOCAL_NAME_MAX];
        if (rl_sock_local_name(fd, name) == 0) lfd = rl_sock_listen_local(name, 1);
    }
    if (rl_sock_start_listening(fd) != 0) {
        if (lfd >= 0) rl_closesocket(lfd);
        rl_closesocket(fd);
        return RL_ESYS;
    }
    n->lfds[n->nlfds++] = fd;
    if (lfd >= 0) n->lfds[n->nlfds++] = lfd;
    return RL_OK;
}

int rl_node_listen_ipc(rl_node *n, const char *path) {
    if (n->cfg.role != RL_ROLE_LEARNER || n->nlfds == 0 || n->nlfds >= RL_MAX_LISTEN ||
        n->ipc_path[0] || n->started)
        return RL_EINVAL;
    if (strlen(path) >= sizeof n->ipc_path) return RL_EINVAL;
    int fd = rl_sock_listen_local(path, 0);
    if (fd < 0) return fd;
    n->lfds[n->nlfds++] = fd;
    snprintf(n->ipc_path, sizeof n->ipc_path, "%s", path);
    return RL_OK;
}

static int write_all(int fd, const uint8_t *p, size_t len, long long deadline) {
    while (len) {
        void *b = (void *)p;
        ssize_t w = rl_sock_writev(fd, &b, &len, 1);
        if (w == RL_EAGAIN) {
            int rc = rl_sock_wait(fd, RL_POLLOUT, (int)(deadline - rl_now_ms()));
            if (rc) return rc;
            continue;
        }
        if (w < 0) return RL_ECONNLOST;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t len, long long deadline) {
    while (len) {
        ssize_t r = rl_sock_read(fd, p, len);
        if (r == RL_EAGAIN) {
            long long left = deadline - rl_now_ms();
            if (left <= 0) return RL_ETIMEDOUT;
            int rc = rl_sock_wait(fd, RL_POLLIN, (int)left);
            if (rc) return rc;
            continue;
        }
        if (r <= 0) return RL_ECONNLOST;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Actor: does it map a region its learner offers (parameters)? */
static int actor_maps_shm(const rl_node *n) { return SHM_AVAILABLE && n->cfg.shm_bytes > 0; }

/* Actor: exchange hellos on a fresh connection (and, with a key, prove it
 * and check the learner's proof: PROTOCOL.md 3.5). *peer gets the learner's
 * final hello, or on RL_EAUTH / RL_EVERSION the one it sent first. */
static int actor_handshake(rl_node *n, int fd, int local, int want_reliable, uint64_t acked,
                           long long deadline, rl_hello *peer) {
    int keyed = n->cfg.auth_key_len > 0;
    rl_hello mine;
    memset(&mine, 0, sizeof mine);
    mine.version = RL_PROTOCOL_VERSION;
    mine.role = RL_ROLE_ACTOR;
    mine.flags = (uint8_t)((want_reliable ? RL_HELLO_RELIABLE : 0) | (keyed ? RL_HELLO_AUTH : 0) |
                           (local && actor_maps_shm(n) ? RL_HELLO_SHM : 0));
    mine.node_id = n->id;
    mine.resume_seq = acked;   /* what a restarted learner may assume was taken */
    mine.max_message = (uint32_t)(n->cfg.limits.max_message_bytes >> 20);
    mine.retry_attempts = n->cfg.retry_attempts;
    uint8_t hs[2 * RL_HELLO_SIZE];        /* our hello and nonce */
    uint8_t theirs[3 * RL_HELLO_SIZE];    /* their hello, nonce and proof */
    rl_hello_encode(&mine, hs);
    if (keyed && rl_random_bytes(hs + RL_HELLO_SIZE, RL_NONCE_SIZE)) return RL_ESYS;
    int rc = write_all(fd, hs, keyed ? sizeof hs : RL_HELLO_SIZE, deadline);
    if (!rc) rc = read_all(fd, theirs, RL_HELLO_SIZE, deadline);
    if (rc) return rc;
    memset(peer, 0, sizeof *peer);
    rc = rl_hello_decode(theirs, peer);
    if (!rc && peer->role != RL_ROLE_LEARNER) rc = RL_EPROTO;
    if (rc) return rc;
    if (keyed != ((peer->flags & RL_HELLO_AUTH) != 0)) return RL_EAUTH;
    if (!keyed) return RL_OK;
    /* The learner's nonce and proof; then ours; then its final hello. */
    rc = read_all(fd, theirs + RL_HELLO_SIZE, 2 * RL_HELLO_SIZE, deadline);
    if (rc) return rc == RL_ECONNLOST ? RL_EPROTO : rc;
    uint8_t expect[RL_SHA256_SIZE], proof[RL_SHA256_SIZE];
    auth_proof(n, AUTH_LABEL_LEARNER, hs, theirs, expect);
    if (!rl_ct_equal(expect, theirs + 2 * RL_HELLO_SIZE, RL_SHA256_SIZE)) return RL_EAUTH;
    auth_proof(n, AUTH_LABEL_ACTOR, hs, theirs, proof);
    rc = write_all(fd, proof, sizeof proof, deadline);
    if (!rc) rc = read_all(fd, theirs, RL_HELLO_SIZE, deadline);
    if (rc) return rc;
    rl_hello first = *peer;
    rc = rl_hello_decode(theirs, peer);
    if (!rc && (peer->role != RL_ROLE_LEARNER || peer->node_id != first.node_id ||
                !(peer->flags & RL_HELLO_AUTH)))
        rc = RL_EPROTO;
    return rc;
}

/* Actor: may a new connection be made now? */
static int connect_allowed(rl_node *n, uint64_t *acked, int *want_reliable) {
    if (n->cfg.role != RL_ROLE_ACTOR) return RL_EINVAL;
    rl_mutex_lock(&n->mu);
    int busy = n->nconns > 0, closing = n->closing;
    *acked = n->acked;
    *want_reliable = n->cfg.reliable || n->reliable;
    rl_mutex_unlock(&n->mu);
    if (closing) return RL_ECLOSED;
    if (busy) return RL_EINVAL;   /* already connected */
    return RL_OK;
}

static int attach_conn(rl_node *n, int fd, int local, const rl_hello *peer);
static int local_connect(rl_node *n, char names[][RL_LOCAL_NAME_MAX], int k, int want_reliable,
                         uint64_t acked, long long deadline, rl_hello *peer);
static int tcp_handshake(rl_node *n, int fd, int want_reliable, uint64_t acked, long long deadline,
                         rl_hello *peer);

int rl_node_connect(rl_node *n, const char *host, int port, int timeout_ms, rl_hello *peer) {
    uint64_t acked;
    int want_reliable, rc = connect_allowed(n, &acked, &want_reliable);
    if (rc) return rc;
    long long deadline = rl_now_ms() + timeout_ms;
    char names[8][RL_LOCAL_NAME_MAX];
    int k = 0;
    if (n->cfg.local) {
        /* Same host? Then the learner also listens on AF_UNIX, found by the
         * address we were given. No such endpoint, or something there that
         * is not an rlink learner: TCP. A learner found there that refuses
         * us (version, key), or that goes away during the handshake (it is
         * closing: a new one may be starting on the same address), gives
         * this attempt's answer: falling back to TCP then could settle on
         * TCP for good with the new learner. */
        k = rl_sock_local_candidates(host, port, names, 8);
        rc = local_connect(n, names, k, want_reliable, acked, deadline, peer);
        if (rc != RL_ECONNREFUSED) return rc;
    }
    int fd = rl_sock_connect(host, port, (int)(deadline - rl_now_ms() > 0 ? deadline - rl_now_ms() : 0));
    if (fd < 0) return fd;
    if (k > 0) {
        /* None was there. But a learner starting right now listens on
         * AF_UNIX before TCP: now that TCP answers, look once more. */
        rc = local_connect(n, names, k, want_reliable, acked, deadline, peer);
        if (rc != RL_ECONNREFUSED) {
            rl_closesocket(fd);   /* before any hello: the learner just sees it close */
            return rc;
        }
    }
    return tcp_handshake(n, fd, want_reliable, acked, deadline, peer);
}

/* Actor: try the learner's same-host endpoints in order. Returns what the
 * first one found there says (RL_OK: connected), or RL_ECONNREFUSED when
 * none is there, or there is something that is not an rlink learner. */
static int local_connect(rl_node *n, char names[][RL_LOCAL_NAME_MAX], int k, int want_reliable,
                         uint64_t acked, long long deadline, rl_hello *peer) {
    for (int i = 0; i < k; i++) {
        int fd = rl_sock_connect_local(names[i], 1);
        if (fd < 0) continue;
        int rc = actor_handshake(n, fd, 1, want_reliable, acked, deadline, peer);
        if (rc == RL_OK) return attach_conn(n, fd, 1, peer);
        rl_closesocket(fd);
        if (rc == RL_EAUTH || rc == RL_EVERSION || rc == RL_ECONNLOST || rc == RL_ETIMEDOUT)
            return rc;
    }
    return RL_ECONNREFUSED;
}

/* Actor: the handshake on a connected TCP fd, then the connection. */
static int tcp_handshake(rl_node *n, int fd, int want_reliable, uint64_t acked, long long deadline,
                         rl_hello *peer) {
    int rc = actor_handshake(n, fd, 0, want_reliable, acked, deadline, peer);
    if (rc) { rl_closesocket(fd); return rc; }
    return attach_conn(n, fd, 0, peer);
}

int rl_node_connect_ipc(rl_node *n, const char *path, int timeout_ms, rl_hello *peer) {
    uint64_t acked;
    int want_reliable, rc = connect_allowed(n, &acked, &want_reliable);
    if (rc) return rc;
    long long deadline = rl_now_ms() + timeout_ms;
    int fd = rl_sock_connect_local(path, 0);
    if (fd < 0) return fd;
    rc = actor_handshake(n, fd, 1, want_reliable, acked, deadline, peer);
    if (rc) { rl_closesocket(fd); return rc; }
    return attach_conn(n, fd, 1, peer);
}

/* Actor: the handshake on fd succeeded: make it the node's connection (and
 * in reliable mode queue the resend). Takes ownership of fd. */
static int attach_conn(rl_node *n, int fd, int local, const rl_hello *peer) {
    int rc = 0;
    rl_conn *c = conn_new(fd, CONN_OPEN);
    if (!c) { rl_closesocket(fd); return RL_ENOMEM; }
    c->local = local;
    c->peer_id = peer->node_id;
    c->reliable = (peer->flags & RL_HELLO_RELIABLE) != 0;
    c->last_rx_ms = c->last_tx_ms = rl_now_ms();
    c->shm_accepts = local && actor_maps_shm(n);   /* as our hello said */
    /* Large trajectories through shared memory: same host, a learner that
     * maps regions. First frame on the link. */
    if (local && (peer->flags & RL_HELLO_SHM) && n->cfg.shm_bytes > 0 && SHM_AVAILABLE)
        shm_offer_region(n, c, rl_now_ms() + 1000);

    rl_mutex_lock(&n->rel_mu);   /* no reliable send interleaves with the resend */
    rl_mutex_lock(&n->mu);
    if (n->closing) {
        rl_mutex_unlock(&n->mu);
        rl_mutex_unlock(&n->rel_mu);
        conn_shut(n, c);
        conn_unref(c);
        return RL_ECLOSED;
    }
    int first = n->learner_id == 0;
    int restarted = !first && peer->node_id != n->learner_id;
    n->learner_id = peer->node_id;
    if (restarted) {   /* a new learner numbers its parameter versions afresh */
        rl_msg_free(n->params_in);
        n->params_in = NULL;
        n->params_in_version = 0;
    }
    if (c->reliable) n->reliable = 1;
    if (n->reliable) {
        c->reliable = 1;
        c->last_seq = peer->resume_seq;
        /* Resend what the learner has not delivered. A learner that
         * restarted lost what its application had not acknowledged: those
         * go again, flagged as possible redeliveries. */
        for (size_t i = 0; i < n->ret_n; i++) {
            retained_frame *r = &n->ret[(n->ret_head + i) % n->ret_cap];
            if (r->seq <= peer->resume_seq) continue;
            /* in an old link's region: this link (its learner maybe new)
             * gets the whole frame */
            rc = retained_whole(n, r);
            if (rc) break;
            if (restarted && r->queued && !(r->data[1] & RL_FLAG_REDELIVERED)) {
                r->data[1] |= RL_FLAG_REDELIVERED;
                reseal_header(r->data);
            }
            if (r->owner) {
                /* the caller promised not to write those arrays until the
                 * ack; if they did, the learner would refuse the frame on
                 * every resend: it goes with the bytes as they are now */
                uint32_t crc = iov_crc(r->body, r->nbody);
                rl_header rh;
                if (rl_header_decode(r->data, UINT64_MAX, &rh) == RL_OK && rh.crc != crc) {
                    rh.crc = crc;
                    rl_header_encode(&rh, r->data);
                }
            }
            ring_put_retained(c, r, 0);
            r->queued = 1;
            c->last_seq = r->seq;
        }
        if (c->ring.bytes) c->want_out = 1;
    }
    if (!rc) rc = table_add(n, c);
    if (!rc) {
        n->conn_lost = 0;
        n->failed = 0;
        n->lost_reason[0] = 0;
        if (!first) STAT_ADD(n, st_reconnects, 1);
        wake_waiters(n);
    }
    rl_mutex_unlock(&n->mu);
    rl_mutex_unlock(&n->rel_mu);
    if (rc) { conn_shut(n, c); conn_unref(c); return rc; }
    if (n->started) rl_waker_wake(&n->waker);
    return RL_OK;
}

int rl_node_wait_lost(rl_node *n, int timeout_ms) {
    long long deadline = to_deadline(timeout_ms);
    int rc;
    rl_mutex_lock(&n->mu);
    for (;;) {
        if (n->closing) { rc = RL_ECLOSED; break; }
        if (n->conn_lost && n->nconns == 0) { rc = RL_OK; break; }
        if (rl_cond_wait_until(&n->cv, &n->mu, deadline) == ETIMEDOUT) { rc = RL_ETIMEDOUT; break; }
    }
    rl_mutex_unlock(&n->mu);
    return rc;
}

void rl_node_fail(rl_node *n, const char *reason) {
    rl_mutex_lock(&n->mu);
    n->failed = 1;
    n->conn_lost = 1;
    snprintf(n->lost_reason, sizeof n->lost_reason, "%s", reason ? reason : "gave up reconnecting");
    wake_waiters(n);
    rl_mutex_unlock(&n->mu);
}

int rl_node_wait_acked(rl_node *n, int timeout_ms) {
    return rl_node_wait_acked_upto(n, UINT64_MAX, timeout_ms);
}

/* mu held: is a message numbered seq or less still retained? (The window
 * is in sequence order: its head is the oldest.) */
static int retained_upto(const rl_node *n, uint64_t seq) {
    return n->ret_n > 0 && n->ret[n->ret_head].seq <= seq;
}

int rl_node_wait_acked_upto(rl_node *n, uint64_t seq, int timeout_ms) {
    long long deadline = to_deadline(timeout_ms);
    int rc = RL_OK;
    rl_mutex_lock(&n->mu);
    n->ret_waiters++;
    while (retained_upto(n, seq) && !n->failed && !n->closing) {
        if (rl_cond_wait_until(&n->cv, &n->mu, deadline) == ETIMEDOUT) break;
    }
    n->ret_waiters--;
    if (retained_upto(n, seq)) rc = n->closing ? RL_ECLOSED : n->failed ? RL_ECONNLOST : RL_ETIMEDOUT;
    rl_mutex_unlock(&n->mu);
    return rc;
}

uint64_t rl_node_learner_id(rl_node *n) {
    rl_mutex_lock(&n->mu);
    uint64_t id = n->learner_id;
    rl_mutex_unlock(&n->mu);
    return id;
}

uint64_t rl_node_conn_gen(rl_node *n) {
    rl_mutex_lock(&n->mu);
    uint64_t g = n->conn_gen;
    rl_mutex_unlock(&n->mu);
    return g;
}

void rl_node_stats(rl_node *n, rl_stats *st) {
    memset(st, 0, sizeof *st);
    st->sent = rl_atomic_load(&n->st_sent, RL_RELAXED);
    st->received = rl_atomic_load(&n->st_received, RL_RELAXED);
    st->dropped = rl_atomic_load(&n->st_dropped, RL_RELAXED);
    st->redelivered = rl_atomic_load(&n->st_redelivered, RL_RELAXED);
    st->duplicates = rl_atomic_load(&n->st_duplicates, RL_RELAXED);
    st->reconnects = rl_atomic_load(&n->st_reconnects, RL_RELAXED);
    st->rejected = rl_atomic_load(&n->st_rejected, RL_RELAXED);
    rl_mutex_lock(&n->mu);
    st->retained = n->ret_n;
    st->retained_bytes = n->ret_bytes;
    st->acked = n->acked;
    st->reliable = n->reliable;
    for (int i = 0; i < n->nconns; i++) st->peers += n->conns[i]->state == CONN_OPEN;
    if (n->cfg.role == RL_ROLE_ACTOR) {
        st->params_version = n->params_newest;
    } else if (n->params) {
        rl_header ph;
        if (rl_header_decode(n->params->data, UINT64_MAX, &ph) == RL_OK) st->params_version = ph.ref;
    }
    rl_mutex_unlock(&n->mu);
}

int rl_node_peer_stats(rl_node *n, rl_peer_stats *out, int max) {
    int k = 0;
    long long now = rl_now_ms();
    rl_mutex_lock(&n->mu);
    for (int i = 0; i < n->nconns && k < max; i++) {
        rl_conn *c = n->conns[i];
        if (c->state != CONN_OPEN) continue;
        rl_peer_stats *p = &out[k++];
        p->peer_id = c->peer_id;
        p->msgs_in = rl_atomic_load(&c->msgs_in, RL_RELAXED);
        p->bytes_in = rl_atomic_load(&c->frame_bytes_in, RL_RELAXED);
        p->msgs_out = rl_atomic_load(&c->msgs_out, RL_RELAXED);
        p->bytes_out = rl_atomic_load(&c->frame_bytes_out, RL_RELAXED);
        p->params_version = rl_atomic_load(&c->params_version, RL_RELAXED);
        p->idle_ms = now - rl_atomic_load(&c->last_rx_ms, RL_RELAXED);
        if (p->idle_ms < 0) p->idle_ms = 0;
        p->age_ms = now - c->opened_ms;
        rl_mutex_lock(&c->send_mu);
        p->sendq_bytes = c->ring.bytes + (c->pending_params ? c->pending_params->len : 0);
        p->rtt_us = c->closed || c->local ? -1 : rl_sock_rtt_us(c->fd);
        p->local = c->local;
        p->shm = c->shm_out != NULL || c->shm_map != NULL || c->pshm_id != 0;
        rl_mutex_unlock(&c->send_mu);
    }
    rl_mutex_unlock(&n->mu);
    return k;
}

int rl_node_start(rl_node *n) {
    if (n->started) return RL_EINVAL;
    if (rl_poller_set(n->poller, n->waker.rfd, RL_POLLIN, NULL)) return RL_ESYS;
    for (int i = 0; i < n->nlfds; i++)
        if (rl_poller_set(n->poller, n->lfds[i], RL_POLLIN, NULL)) return RL_ESYS;
    rl_mutex_lock(&n->mu);
    for (int i = 0; i < n->nconns; i++) {
        n->conns[i]->interest = RL_POLLIN;
        rl_poller_set(n->poller, n->conns[i]->fd, RL_POLLIN, n->conns[i]);
    }
    rl_mutex_unlock(&n->mu);
    if (rl_thread_create(&n->thread, io_main, n) != 0) return RL_ESYS;
    n->started = 1;
    return RL_OK;
}

/* Actor (under mu): the connection is lost for good, as far as a blocked
 * call is concerned. A reliable session waits for its reconnection. */
static int conn_gone(rl_node *n) {
    return n->conn_lost && (!n->reliable || n->failed);
}

int rl_node_recv(rl_node *n, int qi, rl_msg **out, int max, int timeout_ms) {
    if (qi < 0 || qi >= RL_NQUEUES || max < 1) return RL_EINVAL;
    long long deadline = to_deadline(timeout_ms);
    int spun = timeout_ms == 0 || qi != RL_Q_REQUEST;   /* requests are answered at once */
    rl_mutex_lock(&n->mu);
    int rc;
    for (;;) {
        if (n->closing) { rc = RL_ECLOSED; break; }
        if (n->q[qi].head) {
            int k = 0, ack_now = 0, slots_owed = 0;
            while (k < max && n->q[qi].head) {
                rl_msg *m = q_unlink(n, qi, NULL, n->q[qi].head);
                rl_session *sess = m->session;
                if (sess) {   /* taken by the application: acknowledge it */
                    if (m->hdr.seq > sess->consumed) sess->consumed = m->hdr.seq;
                    rl_atomic_sub(&sess->queued, 1, RL_RELAXED);
                    m->session = NULL;
                    if (!n->ack_dirty) n->ack_first_ms = rl_now_ms();
                    n->ack_dirty = 1;
                    sess->owed_bytes += m->hdr.meta_len + m->hdr.data_len;
                    if (m->hdr.flags & RL_FLAG_SHM) sess->owed_slot_bytes += m->hdr.data_len;
                    if (sess->consumed - sess->ack_sent >= ACK_EVERY || sess->owed_bytes >= ACK_BYTES ||
                        sess->owed_slot_bytes >= ACK_SLOT_BYTES)
                        ack_now = 1;
                    slots_owed |= sess->owed_slot_bytes > 0;
                }
                out[k++] = m;
            }
            /* Slots come back to the actor only with the ack: while any
             * are owed, the I/O thread acknowledges at every turn, and
             * when the application has caught up (the queue ran dry) it is
             * woken to, at most once a millisecond (a consumer that empties
             * the queue at every call would otherwise cost two thread
             * wake-ups per call). Otherwise it acknowledges ACK_DELAY_MS
             * after the first owed message, on its own (its poll timeout is
             * bounded by that while acks are owed, and by 5 ms while
             * sessions exist): batched, with no thread wake-up per call. */
            if (slots_owed) n->ack_slots = 1;
            if (!ack_now && slots_owed && !n->q[qi].head && !n->ack_urgent) {
                long long t = rl_now_ms();
                if (t - n->last_ack_wake_ms >= 1) {
                    n->last_ack_wake_ms = t;
                    ack_now = 1;
                }
            }
            if (ack_now && !n->ack_urgent) {
                n->ack_urgent = 1;
                rl_waker_wake(&n->waker);
            }
            after_pop(n);
            rc = k;
            break;
        }
        if (conn_gone(n)) { rc = RL_ECONNLOST; break; }
        if (wait_spinning(n, deadline, &spun) == ETIMEDOUT) { rc = RL_ETIMEDOUT; break; }
    }
    rl_mutex_unlock(&n->mu);
    return rc;
}

int rl_node_wait_reply(rl_node *n, uint64_t request_id, uint64_t gen, int timeout_ms, rl_msg **out) {
    long long deadline = to_deadline(timeout_ms);
    int spun = timeout_ms == 0;
    rl_mutex_lock(&n->mu);
    int rc;
    for (;;) {
        if (n->closing) { rc = RL_ECLOSED; break; }
        rl_msg *prev = NULL, *m = n->q[RL_Q_REPLY].head;
        while (m && m->hdr.ref != request_id) { prev = m; m = m->next; }
        if (m) {
            *out = q_unlink(n, RL_Q_REPLY, prev, m);
            after_pop(n);
            rc = RL_OK;
            break;
        }
        /* a request in flight at a disconnect fails: it is never resent */
        if (n->conn_lost || n->conn_gen != gen) { rc = RL_ECONNLOST; break; }
        if (wait_spinning(n, deadline, &spun) == ETIMEDOUT) { rc = RL_ETIMEDOUT; break; }
    }
    rl_mutex_unlock(&n->mu);
    return rc;
}

void rl_node_cancel_reply(rl_node *n, uint64_t request_id) {
    rl_mutex_lock(&n->mu);
    rl_msg *prev = NULL, *m = n->q[RL_Q_REPLY].head;
    while (m && m->hdr.ref != request_id) { prev = m; m = m->next; }
    if (m) {
        rl_msg_free(q_unlink(n, RL_Q_REPLY, prev, m));
        after_pop(n);
    } else if (n->ncancelled < NCANCELLED) {
        n->cancelled[n->ncancelled++] = request_id;
    } else {
        n->cancelled[n->cancelled_next] = request_id;   /* overwrite the oldest slot */
        n->cancelled_next = (n->cancelled_next + 1) % NCANCELLED;
    }
    rl_mutex_unlock(&n->mu);
}

int rl_node_take_params(rl_node *n, uint64_t newer_than, int timeout_ms, rl_msg **out) {
    long long deadline = to_deadline(timeout_ms);
    rl_mutex_lock(&n->mu);
    int rc;
    for (;;) {
        if (n->closing) { rc = RL_ECLOSED; break; }
        if (n->params_in && n->params_in_version > newer_than) {
            *out = n->params_in;
            n->params_in = NULL;
            rc = RL_OK;
            break;
        }
        if (conn_gone(n)) { rc = RL_ECONNLOST; break; }
        if (rl_cond_wait_until(&n->cv, &n->mu, deadline) == ETIMEDOUT) { rc = RL_ETIMEDOUT; break; }
    }
    rl_mutex_unlock(&n->mu);
    return rc;
}

int rl_node_peers(rl_node *n, uint64_t *ids, int max) {
    rl_mutex_lock(&n->mu);
    int k = 0;
    for (int i = 0; i < n->nconns; i++) {
        if (n->conns[i]->state != CONN_OPEN) continue;
        if (k < max) ids[k] = n->conns[i]->peer_id;
        k++;
    }
    rl_mutex_unlock(&n->mu);
    return k;
}

int rl_node_events_pending(rl_node *n) { return rl_atomic_load(&n->ev_pending, RL_ACQUIRE); }

int rl_node_next_event(rl_node *n, rl_event *ev) {
    rl_mutex_lock(&n->mu);
    int got = 0;
    if (n->ev_count) {
        *ev = n->events[n->ev_head];
        n->ev_head = (n->ev_head + 1) % NEVENTS;
        n->ev_count--;
        rl_atomic_store(&n->ev_pending, n->ev_count, RL_RELEASE);
        got = 1;
    }
    rl_mutex_unlock(&n->mu);
    return got;
}

const char *rl_node_lost_reason(rl_node *n) { return n->lost_reason; }

void rl_node_close(rl_node *n, int flush_timeout_ms) {
    rl_mutex_lock(&n->close_mu);
    if (!n->joined) {
        rl_mutex_lock(&n->mu);
        n->flush_deadline = rl_now_ms() + (flush_timeout_ms < 0 ? 0 : flush_timeout_ms);
        rl_atomic_store(&n->closing, 1, RL_RELEASE);
        wake_waiters(n);
        for (int i = 0; i < n->nconns; i++) {
            rl_conn *c = n->conns[i];
            rl_mutex_lock(&c->send_mu);
            rl_cond_broadcast(&c->send_cv);
            rl_mutex_unlock(&c->send_mu);
        }
        rl_mutex_unlock(&n->mu);
        if (n->started) {
            rl_waker_wake(&n->waker);
            rl_thread_join(n->thread);
        } else {
            shutdown_all(n);
        }
        n->joined = 1;
        for (int i = 0; i < n->nlfds; i++) rl_closesocket(n->lfds[i]);
        n->nlfds = 0;
        if (n->ipc_path[0]) remove(n->ipc_path);   /* ours: bound by this node */
        n->ipc_path[0] = 0;
        rl_waker_close(&n->waker);
        rl_poller_free(n->poller);
        n->poller = NULL;
    }
    rl_mutex_unlock(&n->close_mu);
}

void rl_node_destroy(rl_node *n) {
    if (!n) return;
    rl_node_close(n, 0);
    for (int qi = 0; qi < RL_NQUEUES; qi++) {
        rl_msg *m = n->q[qi].head;
        while (m) { rl_msg *nx = m->next; rl_msg_free(m); m = nx; }
    }
    rl_msg_free(n->params_in);
    rl_buf_unref(n->params);
    rl_buf_unref(n->pshm_frame);
    rl_shm_destroy(n->pshm);
    for (size_t i = 0; i < n->ret_n; i++) {
        retained_frame *r = &n->ret[(n->ret_head + i) % n->ret_cap];
        rl_buf_unref(r->buf);
        rl_buf_unref(r->owner);
        if (r->shm) conn_unref(r->shm);
    }
    rl_buf_unref(n->ret_chunk);
    free(n->ret);
    for (int i = 0; i < n->nsessions; i++) free(n->sessions[i]);
    free(n->sessions);
    rl_mutex_destroy(&n->rel_mu);
    rl_cond_destroy(&n->copy.cv);
    rl_mutex_destroy(&n->copy.mu);
    rl_mutex_destroy(&n->pub_mu);
    free(n->conns);
    rl_cond_destroy(&n->cv);
    rl_mutex_destroy(&n->mu);
    rl_mutex_destroy(&n->close_mu);
    if (n->auth_key) {
        volatile uint8_t *k = n->auth_key;
        for (size_t i = 0; i < n->cfg.auth_key_len; i++) k[i] = 0;
        free(n->auth_key);
    }
    free(n);
}
