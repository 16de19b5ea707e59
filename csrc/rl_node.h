/*
 * rl_node.h -- an rlink node: sockets, an I/O thread owned by C, bounded
 * queues and the three patterns (many-to-one, one-to-many, bidirectional).
 *
 * Threads. Each started node owns one I/O thread that accepts, reads,
 * validates, assembles frames and drains send queues. Every other function
 * here may be called from any number of application threads at once unless
 * its comment says otherwise; none of them may be called after
 * rl_node_destroy. Blocking functions take a timeout in milliseconds
 * (-1 = forever) and return RL_ETIMEDOUT when it passes; the Python binding
 * calls them in short slices with the GIL released so signals are seen.
 *
 * Ownership. rl_msg objects returned by the receive functions belong to the
 * caller, who releases them with rl_msg_free. Memory passed to rl_node_send
 * is only borrowed for the duration of the call: when it returns, every byte
 * has been written to the socket or copied.
 */
#ifndef RL_NODE_H
#define RL_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "rl_frame.h"
#include "rl_ring.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rl_node rl_node;

/* A received frame: one 64-byte-aligned allocation holding the frame as it
 * came off the stream (header included). Its data section (64-byte
 * aligned) is in that allocation too, or, for a frame whose data came
 * through shared memory (RL_FLAG_SHM), in this process's private mapping
 * of the sender's region, held until the message is freed. Arrays decoded
 * from it may point at rl_msg_data(m). */
typedef struct rl_msg {
    struct rl_msg *next;      /* queue link, internal */
    rl_header hdr;
    uint64_t peer_id;         /* node id of the sending peer */
    uint8_t *frame;           /* owned, rl_frame_size(&hdr) bytes */
    uint64_t size;
    size_t cap;               /* allocated bytes at frame; 0: in this block (internal) */
    uint8_t *data;            /* the data section, or NULL: use rl_msg_data */
    void *shm;                /* the connection its shared-memory slot came by (internal) */
    void *shm_map;            /* the mapped region that slot is in (internal) */
    uint64_t shm_id;          /* that region's id, for the release (internal) */
    void *session;            /* learner, reliable mode: its session (internal) */
    uint32_t body_crc;        /* body CRC32C computed while reading (internal) */
    int body_crc_done;
} rl_msg;

/* A message for a frame with header *h (copied in): room for the whole
 * frame at m->frame (64-byte aligned, contents undefined), no data, no
 * session. NULL on ENOMEM or if the frame cannot fit in memory. Any thread;
 * the caller owns the result and releases it with rl_msg_free. */
rl_msg *rl_msg_new(const rl_header *h, uint64_t peer_id);
/* Release a message (any thread). Large frame buffers are recycled; a
 * shared-memory slot is handed back to its sender. */
void rl_msg_free(rl_msg *m);
static inline const uint8_t *rl_msg_meta(const rl_msg *m) { return m->frame + RL_HEADER_SIZE; }
static inline uint8_t *rl_msg_data(const rl_msg *m) {
    return m->data ? m->data : m->frame + rl_frame_data_offset(&m->hdr);
}

typedef struct rl_config {
    int role;                    /* RL_ROLE_ACTOR / RL_ROLE_LEARNER */
    int reliable;                /* carried in the handshake */
    uint32_t retry_attempts;     /* carried in the handshake */
    uint64_t node_id;            /* 0 = pick a random one */
    size_t queue_max_msgs;       /* receive queue bound (messages) */
    size_t queue_max_bytes;      /* receive queue bound (bytes) */
    size_t sendq_max_bytes;      /* per-connection send queue bound */
    int handshake_timeout_ms;
    int heartbeat_ms;            /* send a heartbeat after this long without sending */
    int peer_timeout_ms;         /* drop a peer silent this long (0 = never) */
    size_t retain_max_bytes;     /* reliable actor: bound of the un-acked window */
    int max_connections;         /* learner: open + handshaking connections (0 = no bound) */
    int local;                   /* same-host fast path (AF_UNIX), default on: a learner
                                    also listens on an abstract socket named after its
                                    TCP address; an actor tries it first when the
                                    learner's address is on this machine. Linux only
                                    (abstract names); elsewhere TCP is used */
    size_t shm_bytes;            /* same host: the shared-memory region an actor offers
                                    its learner for large trajectories (0 = none;
                                    default 64 MiB, allocated as it is used) */
    size_t shm_min_bytes;        /* data sections at least this large go through it */
    int wait_spin_us;            /* request/reply waits spin this long for the answer
                                    before sleeping (0 = never spin; default 50) */
    /* Shared secret for HMAC-SHA256 challenge-response in the handshake
     * (both directions). NULL/0 = no authentication. rl_node_create copies
     * it; the caller's buffer is not referenced afterwards. */
    const uint8_t *auth_key;
    size_t auth_key_len;
    rl_limits limits;
} rl_config;

void rl_config_default(rl_config *c, int role);

/* Counters, all since the node was created. */
typedef struct rl_stats {
    uint64_t sent;            /* messages handed to the node by the application */
    uint64_t received;        /* messages queued for the application */
    uint64_t dropped;         /* unreliable mode: messages lost with a broken connection */
    uint64_t retained;        /* reliable actor: messages not yet acknowledged */
    uint64_t retained_bytes;
    uint64_t acked;           /* reliable actor: highest sequence acknowledged */
    uint64_t redelivered;     /* learner: delivered with the redelivered flag */
    uint64_t duplicates;      /* learner: dropped as already delivered */
    uint64_t reconnects;      /* actor: successful reconnections */
    uint64_t rejected;        /* learner: connections dropped for a violation */
    uint64_t peers;           /* open connections now */
    uint64_t params_version;  /* learner: newest published; actor: newest received */
    int reliable;             /* actor: the session is in reliable mode */
} rl_stats;

/* One open connection, as seen by this node. Messages count application
 * frames (not ACK/HEARTBEAT); bytes are whole frames, header included. */
typedef struct rl_peer_stats {
    uint64_t peer_id;
    uint64_t msgs_in, bytes_in;    /* received and queued for the application */
    uint64_t msgs_out, bytes_out;  /* handed to this connection */
    uint64_t sendq_bytes;          /* waiting in its send queue now */
    uint64_t params_version;       /* learner: newest parameters put on it */
    long long idle_ms;             /* since bytes last arrived from the peer */
    long long age_ms;              /* since the connection was accepted/opened */
    long long rtt_us;              /* the kernel's smoothed RTT estimate, -1 if unknown */
    int local;                     /* AF_UNIX (same host) rather than TCP */
    int shm;                       /* a shared-memory region is in use on it (2.2) */
} rl_peer_stats;

/* Receive queues. */
enum { RL_Q_TRAJ = 0, RL_Q_REQUEST = 1, RL_Q_PUSH = 2, RL_Q_REPLY = 3, RL_NQUEUES = 4 };

/* Events reported to the application (joins, leaves, violations). */
typedef struct rl_event {
    int type;                 /* RL_EV_* */
    uint64_t peer_id;
    int code;                 /* RL_E* for LEFT/REJECTED */
    char reason[160];
} rl_event;
enum { RL_EV_JOINED = 1, RL_EV_LEFT = 2, RL_EV_REJECTED = 3 };

/* Create a node (not yet connected or listening). */
int rl_node_create(const rl_config *cfg, rl_node **out);

/* Learner: bind and listen. host NULL or "" = all interfaces. *bound_port
 * receives the port actually bound (useful with port 0). Call once, before
 * rl_node_start. */
int rl_node_listen(rl_node *n, const char *host, int port, int *bound_port);

/* Learner: also listen on an AF_UNIX socket file at path (after
 * rl_node_listen, before rl_node_start). The file is removed at close; a
 * stale one left by a dead process is replaced. */
int rl_node_listen_ipc(rl_node *n, const char *path);

/* Actor: like rl_node_connect, over the AF_UNIX socket file at path.
 * (ipc endpoints, both sides: POSIX only; RL_EINVAL on Windows.) */
int rl_node_connect_ipc(rl_node *n, const char *path, int timeout_ms, rl_hello *peer);

/* Actor: connect to the learner and complete the handshake, trying every
 * address host resolves to, within timeout_ms (first over AF_UNIX when the
 * address is on this machine and cfg.local is set). One attempt per address: the
 * retry policy belongs to the caller. On RL_EVERSION / RL_EPROTO, *peer holds
 * what the learner sent (if anything). First call before rl_node_start; in
 * reliable mode the caller may call it again after the connection is lost
 * (rl_node_wait_lost): the session resumes, un-acknowledged messages the
 * learner has not delivered are resent, and a learner that restarted gets
 * them flagged RL_FLAG_REDELIVERED. With an auth key (or a learner that
 * demands one) returns RL_EAUTH when the two sides do not prove the same
 * key; *peer then holds the learner's first hello, whose RL_HELLO_AUTH flag
 * says whether the learner has a key at all. */
int rl_node_connect(rl_node *n, const char *host, int port, int timeout_ms, rl_hello *peer);

/* Actor: wait until the connection is lost (returns RL_OK), the node closes
 * (RL_ECLOSED) or timeout_ms passes (RL_ETIMEDOUT). */
int rl_node_wait_lost(rl_node *n, int timeout_ms);

/* Actor, reliable mode: give up reconnecting. Blocked and later calls fail
 * with RL_ECONNLOST (reason reported by rl_node_lost_reason) until a later
 * rl_node_connect succeeds. Retained messages are kept. */
void rl_node_fail(rl_node *n, const char *reason);

/* Actor: a counter that changes whenever the connection is lost; a request
 * sent under one value whose reply has not come when it changes failed. */
uint64_t rl_node_conn_gen(rl_node *n);

/* Actor, reliable mode: wait until every retained message is acknowledged
 * (RL_OK; at once when nothing is retained, as in unreliable mode), or
 * timeout_ms passes (RL_ETIMEDOUT), the application gave up reconnecting
 * (rl_node_fail: RL_ECONNLOST) or the node is closed (RL_ECLOSED). */
int rl_node_wait_acked(rl_node *n, int timeout_ms);
/* The same, for the retained messages numbered seq or less only. */
int rl_node_wait_acked_upto(rl_node *n, uint64_t seq, int timeout_ms);

/* Actor: node id of the learner last connected (changes when it restarted). */
uint64_t rl_node_learner_id(rl_node *n);

/* Snapshot of the counters. Thread-safe. */
void rl_node_stats(rl_node *n, rl_stats *out);

/* Per-connection counters of up to max open connections; returns how many
 * were written. Thread-safe; cheap (no syscall but one getsockopt each). */
int rl_node_peer_stats(rl_node *n, rl_peer_stats *out, int max);

/* Start the I/O thread. */
int rl_node_start(rl_node *n);

/* This node's id (as sent in the hello). */
uint64_t rl_node_id(const rl_node *n);

/* Send one frame: header fields kind/flags/ref are taken from *h, meta_len
 * and data_len must describe iov exactly (the header is prepended here).
 * peer_id selects the connection on a learner; an actor ignores it.
 * Blocks while the connection's send queue is over its bound (up to
 * timeout_ms); then writes directly if nothing is queued, and copies what the
 * socket did not take. timeout_ms 0 never waits, not even for a lock held
 * across another sender's blocking write (a caller holding an interpreter
 * lock may use it). Returns RL_OK, RL_ETIMEDOUT (nothing was sent),
 * RL_ECLOSED, RL_ECONNLOST / RL_ENOCONN, RL_ETOOBIG. */
typedef struct rl_iov { const void *base; size_t len; } rl_iov;
int rl_node_send(rl_node *n, uint64_t peer_id, const rl_header *h,
                 const rl_iov *iov, int iovcnt, int timeout_ms);

/* rl_node_send without the retained copy: a reliable actor's trajectory
 * going over a stream (not through shared memory) is retained by reference
 * to the caller's memory. The node then takes a reference to owner (an
 * rl_buf_wrap standing for iov's bytes) and drops it once the frame is
 * acknowledged and written, or the node is destroyed; until then the caller
 * keeps iov's bytes alive and unchanged (a resend after a reconnect reads
 * them again). *owned_seq (if not NULL) receives the frame's sequence
 * number: once rl_node_wait_acked_upto(n, *owned_seq, ...) returns RL_OK the
 * node reads those bytes no more. In every other case owner is not kept,
 * *owned_seq is 0 and the call is rl_node_send. The gather list itself
 * (iov[]) is copied. */
int rl_node_send_owned(rl_node *n, uint64_t peer_id, const rl_header *h,
                       const rl_iov *iov, int iovcnt, int timeout_ms, rl_buf *owner,
                       uint64_t *owned_seq);

/* Learner: publish parameters to every actor (now and later joiners).
 * The frame is copied once into a shared buffer; each actor is sent only the
 * newest version it has not yet started receiving. */
int rl_node_publish(rl_node *n, const rl_header *h, const rl_iov *iov, int iovcnt);

/* Pop up to max messages from queue q, waiting up to timeout_ms for the
 * first. Returns the count (>= 1) or a negative RL_E*. An actor whose
 * connection is lost gets RL_ECONNLOST once its queue is empty. */
int rl_node_recv(rl_node *n, int q, rl_msg **out, int max, int timeout_ms);

/* Actor: wait for the reply whose ref == request_id. Fails with RL_ECONNLOST
 * if the connection is lost (conn_gen moves past gen) before it arrives. */
int rl_node_wait_reply(rl_node *n, uint64_t request_id, uint64_t gen, int timeout_ms, rl_msg **out);

/* Actor: give up on a request (its caller timed out): drop its reply now if
 * it is queued, or when it arrives (the last 1024 cancelled ids are kept). */
void rl_node_cancel_reply(rl_node *n, uint64_t request_id);

/* Actor: take the newest parameters received, if its version > newer_than,
 * waiting up to timeout_ms. Ownership of the message moves to the caller. */
int rl_node_take_params(rl_node *n, uint64_t newer_than, int timeout_ms, rl_msg **out);

/* Learner: copy the ids of connected peers into ids (up to max); returns the
 * number connected. */
int rl_node_peers(rl_node *n, uint64_t *ids, int max);

/* Pop one pending event; returns 1 if one was written, 0 if none. */
int rl_node_next_event(rl_node *n, rl_event *ev);
/* Number of events waiting (cheap, lock-free read). */
int rl_node_events_pending(rl_node *n);

/* Why an actor's connection was lost (static string, "" while connected). */
const char *rl_node_lost_reason(rl_node *n);

/* Stop: flush send queues for up to flush_timeout_ms, send BYE, close every
 * socket, join the I/O thread, and wake every blocked caller with RL_ECLOSED.
 * Idempotent and safe from any thread (except the I/O thread). */
void rl_node_close(rl_node *n, int flush_timeout_ms);

/* Free the node. Call once, after rl_node_close, when no thread can still be
 * inside any rl_node_* call. */
void rl_node_destroy(rl_node *n);

#ifdef __cplusplus
}
#endif
#endif
