/* test_resilience.c -- a reliable actor across a learner restart on the same
 * port, and a learner dropping a silent peer (peer_timeout). Loopback only;
 * these paths (checksummed frames, reconnect handshake, rebinding a port
 * right after close, FIONREAD) differ per OS underneath, so they run on
 * every OS the C tests run on, Windows (mingw+wine) included. */
#include "rl_frame.h"
#include "rl_node.h"
#include "rl_os.h"
#include "rl_sock.h"
#include "rl_test.h"

#include <stdlib.h>
#include <string.h>

/* Receive one message and check it is send_msg(TRAJ, i, count). */
static int recv_seq(rl_node *n, int64_t i, size_t count) {
    rl_msg *m = NULL;
    if (!CHECK_EQ(rl_node_recv(n, RL_Q_TRAJ, &m, 1, 5000), 1)) return 0;
    int ok = check_msg(m, i, count);
    rl_msg_free(m);
    return ok;
}

static rl_node *start_learner(const char *host, int port, int *bound, int peer_timeout_ms) {
    rl_config lc;
    rl_node *L = NULL;
    rl_config_default(&lc, RL_ROLE_LEARNER);
    lc.reliable = 1;
    lc.peer_timeout_ms = peer_timeout_ms;
    if (!CHECK_EQ(rl_node_create(&lc, &L), RL_OK)) return NULL;
    if (!CHECK_EQ(rl_node_listen(L, host, port, bound), RL_OK) || !CHECK_EQ(rl_node_start(L), RL_OK)) {
        rl_node_close(L, 0);
        rl_node_destroy(L);
        return NULL;
    }
    return L;
}

static void test_reliable_learner_restart(void) {
    int port = 0, again = 0;
    rl_node *L = start_learner("127.0.0.1", 0, &port, 0), *A = NULL;
    if (!L) return;
    rl_config ac;
    rl_config_default(&ac, RL_ROLE_ACTOR);
    ac.reliable = 1;
    CHECK_EQ(rl_node_create(&ac, &A), RL_OK);
    rl_hello peer;
    CHECK_EQ(rl_node_connect(A, "127.0.0.1", port, 5000, &peer), RL_OK);
    CHECK_EQ(rl_node_start(A), RL_OK);
    uint64_t first = rl_node_learner_id(A);
    CHECK_EQU(first, rl_node_id(L));
    /* checksummed frames, small and large, in order, all acknowledged */
    for (int64_t i = 0; i < 40; i++) CHECK_EQ(send_msg(A, 0, RL_KIND_TRAJ, 0, i, i % 10 == 0 ? 200000 : 16), RL_OK);
    for (int64_t i = 0; i < 40; i++)
        if (!recv_seq(L, i, i % 10 == 0 ? 200000 : 16)) break;
    CHECK_EQ(rl_node_wait_acked(A, 5000), RL_OK);
    rl_stats st;
    rl_node_stats(A, &st);
    CHECK(st.reliable);
    CHECK_EQU(st.retained, 0);

    /* the learner goes away; a new one takes the same port at once */
    rl_node_close(L, 1000);
    rl_node_destroy(L);
    CHECK_EQ(rl_node_wait_lost(A, 5000), RL_OK);
    L = start_learner("127.0.0.1", port, &again, 0);
    if (!L) { rl_node_close(A, 0); rl_node_destroy(A); return; }
    CHECK_EQ(again, port);
    CHECK_EQ(rl_node_connect(A, "127.0.0.1", port, 5000, &peer), RL_OK);
    CHECK(rl_node_learner_id(A) != first);
    for (int64_t i = 100; i < 110; i++) CHECK_EQ(send_msg(A, 0, RL_KIND_TRAJ, 0, i, 64), RL_OK);
    for (int64_t i = 100; i < 110; i++)
        if (!recv_seq(L, i, 64)) break;
    CHECK_EQ(rl_node_wait_acked(A, 5000), RL_OK);
    rl_node_stats(A, &st);
    CHECK_EQU(st.reconnects, 1);
    rl_node_close(A, 1000);
    rl_node_close(L, 1000);
    rl_node_destroy(A);
    rl_node_destroy(L);
}

static void test_peer_timeout(void) {
    int port = 0;
    rl_node *L = start_learner("127.0.0.1", 0, &port, 300), *A = NULL;
    if (!L) return;
    rl_config ac;
    rl_config_default(&ac, RL_ROLE_ACTOR);
    ac.heartbeat_ms = 60000;   /* the actor stays silent */
    CHECK_EQ(rl_node_create(&ac, &A), RL_OK);
    rl_hello peer;
    CHECK_EQ(rl_node_connect(A, "127.0.0.1", port, 5000, &peer), RL_OK);
    CHECK_EQ(rl_node_start(A), RL_OK);
    long long t0 = rl_now_ms();
    rl_event ev;
    int joined = 0, left = 0;
    for (int i = 0; i < 500 && !left; i++) {
        if (!rl_node_next_event(L, &ev)) { rl_sleep_ms(10); continue; }
        if (ev.type == RL_EV_JOINED) joined = 1;
        if (ev.type == RL_EV_LEFT) {
            left = 1;
            CHECK_EQ(ev.code, RL_ETIMEDOUT);
            CHECK(strstr(ev.reason, "peer_timeout") != NULL);
        }
    }
    CHECK(joined);
    CHECK(left);
    CHECK(rl_now_ms() - t0 >= 250);
    CHECK_EQ(rl_node_wait_lost(A, 5000), RL_OK);   /* the actor sees the learner hang up */
    rl_node_close(A, 0);
    rl_node_close(L, 0);
    rl_node_destroy(A);
    rl_node_destroy(L);
}

/* ---- sends by reference (rl_node_send_owned) ---------------------------- */

/* One message sent by reference: its meta and data live here until the
 * node releases it (then freed: ASan sees any later read). */
typedef struct owned_msg {
    rl_writer w;
    float *data;
    int *released;
} owned_msg;

static void owned_release(void *ctx) {
    owned_msg *m = ctx;
    rl_atomic_add(m->released, 1, RL_ACQ_REL);
    rl_writer_free(&m->w);
    free(m->data);
    free(m);
}

/* Send {"seq": seq, "x": float32[count] all equal to seq} by reference; the
 * floats are returned in *data (valid until *released moves). */
static int send_owned(rl_node *A, int64_t seq, size_t count, int *released, float **data) {
    owned_msg *m = calloc(1, sizeof *m);
    m->released = released;
    m->data = malloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) m->data[i] = (float)seq;
    *data = m->data;
    rl_writer_init(&m->w);
    rl_write_container(&m->w, RL_T_DICT, 2);
    rl_write_key(&m->w, "seq", 3);
    rl_write_int(&m->w, seq);
    rl_write_key(&m->w, "x", 1);
    uint64_t shape[1] = {count};
    rl_write_array(&m->w, RL_DT_FLOAT32, 1, shape, 0, count * sizeof(float));
    rl_header h;
    memset(&h, 0, sizeof h);
    h.kind = RL_KIND_TRAJ;
    h.meta_len = (uint32_t)m->w.len;
    h.data_len = m->w.data_len;
    static const uint8_t zeros[64];
    rl_iov iov[3] = {{m->w.buf, m->w.len}, {zeros, rl_frame_pad(&h)}, {m->data, count * sizeof(float)}};
    rl_buf *owner = rl_buf_wrap(owned_release, m);
    uint64_t numbered = 0;
    int rc = rl_node_send_owned(A, 0, &h, iov, 3, 5000, owner, &numbered);
    if (rc == RL_OK) CHECK_EQU(numbered, (uint64_t)seq + 1);   /* sessions number from 1 */
    rl_buf_unref(owner);   /* the node keeps its own reference, or none */
    return rc;
}

/* A reliable actor retains what it sent by reference: nothing is released
 * before the learner's application takes it; a restarted learner gets the
 * frames again from the caller's memory (as it is then: bytes written
 * meanwhile get a new checksum rather than being refused forever); the ack
 * releases each exactly once, and destroying the node releases the rest. */
static void test_reliable_owned_send(void) {
    enum { N = 4, COUNT = 200000 };   /* 800 KB each: larger than a socket takes at once */
    int port = 0, again = 0, released = 0;
    rl_node *L = start_learner("127.0.0.1", 0, &port, 0), *A = NULL;
    if (!L) return;
    rl_config ac;
    rl_config_default(&ac, RL_ROLE_ACTOR);
    ac.reliable = 1;
    ac.local = 0;   /* over TCP: a same-host link would put the data in shared memory */
    CHECK_EQ(rl_node_create(&ac, &A), RL_OK);
    rl_hello peer;
    CHECK_EQ(rl_node_connect(A, "127.0.0.1", port, 5000, &peer), RL_OK);
    CHECK_EQ(rl_node_start(A), RL_OK);
    float *data[N];
    for (int64_t i = 0; i < N; i++) CHECK_EQ(send_owned(A, i, COUNT, &released, &data[i]), RL_OK);
    /* the learner holds them, its application has taken none: no ack yet */
    rl_stats st;
    rl_node_stats(A, &st);
    CHECK_EQU(st.retained, N);
    CHECK_EQ(rl_atomic_load(&released, RL_ACQUIRE), 0);
    /* the caller breaks its promise on the last one */
    for (size_t k = 0; k < COUNT; k++) data[N - 1][k] = 7.0f;

    rl_node_close(L, 0);
    rl_node_destroy(L);
    CHECK_EQ(rl_node_wait_lost(A, 5000), RL_OK);
    L = start_learner("127.0.0.1", port, &again, 0);
    if (!L) { rl_node_close(A, 0); rl_node_destroy(A); return; }
    CHECK_EQ(rl_node_connect(A, "127.0.0.1", port, 5000, &peer), RL_OK);
    for (int64_t i = 0; i < N - 1; i++)
        if (!recv_seq(L, i, COUNT)) break;
    rl_msg *m = NULL;
    if (CHECK_EQ(rl_node_recv(L, RL_Q_TRAJ, &m, 1, 5000), 1)) {
        CHECK(m->hdr.flags & RL_FLAG_REDELIVERED);
        const float *x = (const float *)(rl_msg_data(m) + m->hdr.data_len - sizeof(float));
        CHECK(*x == 7.0f);   /* delivered as the memory is now, not refused */
        rl_msg_free(m);
    }
    CHECK_EQ(rl_node_wait_acked_upto(A, 2, 5000), RL_OK);   /* the first two at least */
    CHECK(rl_atomic_load(&released, RL_ACQUIRE) >= 2);
    CHECK_EQ(rl_node_wait_acked(A, 5000), RL_OK);
    CHECK_EQ(rl_atomic_load(&released, RL_ACQUIRE), N);

    /* one more, never taken: the node's destruction releases it */
    float *last;
    CHECK_EQ(send_owned(A, N, COUNT, &released, &last), RL_OK);
    CHECK_EQ(rl_atomic_load(&released, RL_ACQUIRE), N);
    rl_node_close(A, 0);
    rl_node_destroy(A);
    CHECK_EQ(rl_atomic_load(&released, RL_ACQUIRE), N + 1);
    rl_node_close(L, 0);
    rl_node_destroy(L);
}

static const rl_test resilience_tests[] = {
    RL_TEST(test_reliable_learner_restart),
    RL_TEST(test_peer_timeout),
    RL_TEST(test_reliable_owned_send),
};

void run_resilience_tests(void) { RL_RUN_SUITE(resilience_tests); }
