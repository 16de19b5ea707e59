# Declarations of the C core (csrc/). Every function is callable without the GIL.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

cdef extern from "rl_frame.h" nogil:
    enum:
        RL_OK, RL_EAGAIN, RL_EPROTO, RL_ELIMIT, RL_ENOMEM, RL_ETIMEDOUT, RL_ECLOSED,
        RL_ECONNLOST, RL_ENOCONN, RL_EVERSION, RL_EADDRINUSE, RL_ECONNREFUSED,
        RL_EINVAL, RL_ESYS, RL_ETOOBIG, RL_EAUTH
    const char *rl_strerror(int code)

    enum:
        RL_PROTOCOL_VERSION
        RL_HEADER_SIZE
        RL_ALIGN
        RL_ROLE_ACTOR, RL_ROLE_LEARNER
        RL_HELLO_RELIABLE, RL_HELLO_AUTH
        RL_KIND_TRAJ, RL_KIND_PARAMS, RL_KIND_REQUEST, RL_KIND_REPLY, RL_KIND_PUSH
        RL_FLAG_REDELIVERED, RL_FLAG_CHECKSUM, RL_FLAG_SHM
        RL_MAX_NDIM, RL_MAX_DEPTH
        RL_T_NONE, RL_T_FALSE, RL_T_TRUE, RL_T_INT, RL_T_BIGINT, RL_T_FLOAT, RL_T_STR,
        RL_T_BYTES, RL_T_LIST, RL_T_TUPLE, RL_T_DICT, RL_T_ARRAY, RL_T_SCALAR
        RL_DT_BOOL, RL_DT_INT8, RL_DT_INT16, RL_DT_INT32, RL_DT_INT64,
        RL_DT_UINT8, RL_DT_UINT16, RL_DT_UINT32, RL_DT_UINT64,
        RL_DT_FLOAT16, RL_DT_FLOAT32, RL_DT_FLOAT64, RL_DT_COMPLEX64, RL_DT_COMPLEX128
        RL_DT_MAX
        RL_AF_FORTRAN

    ctypedef struct rl_hello:
        uint16_t version
        uint8_t role
        uint8_t flags
        uint64_t node_id
        uint64_t resume_seq
        uint32_t max_message
        uint32_t retry_attempts

    ctypedef struct rl_header:
        uint8_t kind
        uint8_t flags
        uint32_t meta_len
        uint64_t data_len
        uint64_t seq
        uint64_t ack
        uint64_t ref
        uint32_t crc

    uint32_t rl_crc32c(uint32_t crc, const void *p, size_t n)
    size_t rl_frame_pad(const rl_header *h)
    size_t rl_frame_data_offset(const rl_header *h)

    ctypedef struct rl_limits:
        uint64_t max_message_bytes
        uint32_t max_arrays
        uint32_t max_ndim
        uint32_t max_depth
        uint32_t max_items
        uint32_t max_str_bytes
    void rl_limits_default(rl_limits *l)
    size_t rl_dtype_size(unsigned dtype)

    ctypedef struct rl_writer:
        uint8_t *buf
        size_t len
        uint64_t data_len
        int failed
    void rl_writer_init(rl_writer *w)
    void rl_writer_reset(rl_writer *w)
    void rl_writer_free(rl_writer *w)
    void rl_write_none(rl_writer *w)
    void rl_write_bool(rl_writer *w, int v)
    void rl_write_int(rl_writer *w, int64_t v)
    void rl_write_bigint(rl_writer *w, const uint8_t *b, uint32_t n)
    void rl_write_float(rl_writer *w, double v)
    void rl_write_str(rl_writer *w, const char *s, uint32_t n)
    void rl_write_key(rl_writer *w, const char *s, uint32_t n)
    void rl_write_bytes(rl_writer *w, const void *p, uint32_t n)
    void rl_write_container(rl_writer *w, unsigned tag, uint32_t count)
    void rl_write_scalar(rl_writer *w, unsigned dtype, const void *value)
    uint64_t rl_write_array(rl_writer *w, unsigned dtype, unsigned ndim,
                            const uint64_t *shape, unsigned aflags, uint64_t nbytes)

    ctypedef struct rl_item_str:
        const uint8_t *p
        uint32_t n
    ctypedef struct rl_item_scalar:
        unsigned dtype
        const uint8_t *p
    ctypedef struct rl_item_array:
        unsigned dtype, ndim, aflags
        uint64_t shape[32]
        uint64_t offset, nbytes
    ctypedef union rl_item_u:
        int64_t i
        double f
        rl_item_str s
        uint32_t count
        rl_item_scalar scalar
        rl_item_array array
    ctypedef struct rl_item:
        unsigned tag
        rl_item_u u
    ctypedef struct rl_reader:
        pass
    void rl_reader_init(rl_reader *r, const uint8_t *meta, size_t meta_len,
                        uint64_t data_len, const rl_limits *limits)
    int rl_read_item(rl_reader *r, rl_item *it)
    int rl_read_key(rl_reader *r, const uint8_t **p, uint32_t *n)
    int rl_meta_validate(const uint8_t *meta, size_t meta_len, uint64_t data_len,
                         const rl_limits *limits, unsigned *root_tag, const char **why)

cdef extern from "rl_sock.h" nogil:
    long long rl_now_ms()

cdef extern from "rl_node.h" nogil:
    ctypedef struct rl_node:
        pass
    ctypedef struct rl_msg:
        rl_header hdr
        uint64_t peer_id
        uint8_t *frame
        uint64_t size
        size_t cap
        uint8_t *data
        void *shm
    rl_msg *rl_msg_new(const rl_header *h, uint64_t peer_id)
    void rl_msg_free(rl_msg *m)
    const uint8_t *rl_msg_meta(const rl_msg *m)
    uint8_t *rl_msg_data(const rl_msg *m)

    ctypedef struct rl_config:
        int role
        int reliable
        uint32_t retry_attempts
        uint64_t node_id
        size_t queue_max_msgs
        size_t queue_max_bytes
        size_t sendq_max_bytes
        int handshake_timeout_ms
        int heartbeat_ms
        int peer_timeout_ms
        size_t retain_max_bytes
        int max_connections
        int local
        size_t shm_bytes
        size_t shm_min_bytes
        int wait_spin_us
        const uint8_t *auth_key
        size_t auth_key_len
        rl_limits limits
    void rl_config_default(rl_config *c, int role)

    enum:
        RL_Q_TRAJ, RL_Q_REQUEST, RL_Q_PUSH, RL_Q_REPLY
        RL_EV_JOINED, RL_EV_LEFT, RL_EV_REJECTED

    ctypedef struct rl_event:
        int type
        uint64_t peer_id
        int code
        char reason[160]

    ctypedef struct rl_stats:
        uint64_t sent, received, dropped, retained, retained_bytes, acked
        uint64_t redelivered, duplicates, reconnects, rejected, peers, params_version
        int reliable

    ctypedef struct rl_peer_stats:
        uint64_t peer_id, msgs_in, bytes_in, msgs_out, bytes_out, sendq_bytes, params_version
        long long idle_ms, age_ms, rtt_us
        int local, shm
    int rl_node_peer_stats(rl_node *n, rl_peer_stats *out, int max)

    ctypedef struct rl_iov:
        const void *base
        size_t len

    int rl_node_create(const rl_config *cfg, rl_node **out)
    int rl_node_listen(rl_node *n, const char *host, int port, int *bound_port)
    int rl_node_connect(rl_node *n, const char *host, int port, int timeout_ms, rl_hello *peer)
    int rl_node_connect_ipc(rl_node *n, const char *path, int timeout_ms, rl_hello *peer)
    int rl_node_listen_ipc(rl_node *n, const char *path)
    int rl_node_start(rl_node *n)
    uint64_t rl_node_id(const rl_node *n)
    int rl_node_send(rl_node *n, uint64_t peer_id, const rl_header *h,
                     const rl_iov *iov, int iovcnt, int timeout_ms)
    int rl_node_send_owned(rl_node *n, uint64_t peer_id, const rl_header *h,
                           const rl_iov *iov, int iovcnt, int timeout_ms, rl_buf *owner,
                           uint64_t *owned_seq)
    int rl_node_publish(rl_node *n, const rl_header *h, const rl_iov *iov, int iovcnt)
    int rl_node_recv(rl_node *n, int q, rl_msg **out, int max, int timeout_ms)
    int rl_node_wait_reply(rl_node *n, uint64_t request_id, uint64_t gen, int timeout_ms, rl_msg **out)
    int rl_node_wait_lost(rl_node *n, int timeout_ms)
    void rl_node_fail(rl_node *n, const char *reason)
    uint64_t rl_node_conn_gen(rl_node *n)
    int rl_node_wait_acked(rl_node *n, int timeout_ms)
    int rl_node_wait_acked_upto(rl_node *n, uint64_t seq, int timeout_ms)
    uint64_t rl_node_learner_id(rl_node *n)
    void rl_node_stats(rl_node *n, rl_stats *out)
    void rl_node_cancel_reply(rl_node *n, uint64_t request_id)
    int rl_node_take_params(rl_node *n, uint64_t newer_than, int timeout_ms, rl_msg **out)
    int rl_node_peers(rl_node *n, uint64_t *ids, int max)
    int rl_node_next_event(rl_node *n, rl_event *ev)
    int rl_node_events_pending(rl_node *n)
    const char *rl_node_lost_reason(rl_node *n)
    void rl_node_close(rl_node *n, int flush_timeout_ms)
    void rl_node_destroy(rl_node *n)

cdef extern from "rl_auth.h" nogil:
    enum:
        RL_SHA256_SIZE
    ctypedef struct rl_hmac:
        pass
    void rl_hmac_init(rl_hmac *m, const void *key, size_t key_len)
    void rl_hmac_update(rl_hmac *m, const void *p, size_t n)
    void rl_hmac_final(rl_hmac *m, uint8_t *out)


cdef extern from "rl_ring.h" nogil:
    ctypedef struct rl_buf:
        pass
    rl_buf *rl_buf_wrap(void (*release)(void *ctx) noexcept nogil, void *ctx)
    void rl_buf_unref(rl_buf *b)


cdef extern from "rl_os.h" nogil:
    ctypedef struct rl_mutex:
        pass
    void rl_mutex_init(rl_mutex *m)
    void rl_mutex_destroy(rl_mutex *m)
    void rl_mutex_lock(rl_mutex *m)
    void rl_mutex_unlock(rl_mutex *m)
