/* test_node.c -- a learner and an actor in one process over loopback. */
#define _GNU_SOURCE
#include "rl_frame.h"
#include "rl_node.h"
#include "rl_os.h"
#include "rl_sock.h"
#include "rl_test.h"

#include <stdlib.h>
#include <string.h>

/* Build a message {"seq": seq, "x": float32[n] filled with seq} and send it
 * (declared in rl_test.h: other suites use it too). */
int send_msg(rl_node *n, uint64_t peer, unsigned kind, uint64_t ref, int64_t seq, size_t count) {
    rl_writer w;
    rl_writer_init(&w);
    rl_write_container(&w, RL_T_DICT, 2);
    rl_write_key(&w, "seq", 3);
    rl_write_int(&w, seq);
    rl_write_key(&w, "x", 1);
    uint64_t shape[1] = {count};
    float *data = malloc(count * sizeof(float) + 1);
    for (size_t i = 0; i < count; i++) data[i] = (float)seq;
    rl_write_array(&w, RL_DT_FLOAT32, 1, shape, 0, count * sizeof(float));
    rl_header h;
    memset(&h, 0, sizeof h);
    h.kind = (uint8_t)kind;
    h.ref = ref;
    h.meta_len = (uint32_t)w.len;
    h.data_len = w.data_len;
    static const uint8_t zeros[64];
    rl_iov iov[3] = {{w.buf, w.len}, {zeros, rl_frame_pad(&h)}, {data, count * sizeof(float)}};
    int rc = kind == RL_KIND_PARAMS ? rl_node_publish(n, &h, iov, 3)
                                    : rl_node_send(n, peer, &h, iov, 3, 5000);
    free(data);
    rl_writer_free(&w);
    return rc;
}

/* Check a received message built by send_msg. */
int check_msg(rl_msg *m, int64_t seq, size_t count) {
    rl_limits lim;
    rl_limits_default(&lim);
    rl_reader r;
    rl_item it;
    const uint8_t *k;
    uint32_t kn;
    rl_reader_init(&r, rl_msg_meta(m), m->hdr.meta_len, m->hdr.data_len, &lim);
    int ok = CHECK_EQ(rl_read_item(&r, &it), RL_OK) && CHECK_EQ(it.tag, RL_T_DICT) &&
             CHECK_EQ(rl_read_key(&r, &k, &kn), RL_OK) && CHECK_EQ(rl_read_item(&r, &it), RL_OK) &&
             CHECK_EQ(it.u.i, seq) && CHECK_EQ(rl_read_key(&r, &k, &kn), RL_OK) &&
             CHECK_EQ(rl_read_item(&r, &it), RL_OK) && CHECK_EQ(it.tag, RL_T_ARRAY) &&
             CHECK_EQU(it.u.array.shape[0], count);
    if (!ok) return 0;
    const float *x = (const float *)(rl_msg_data(m) + it.u.array.offset);
    CHECK_EQ((long)((uintptr_t)x % 64), 0);
    for (size_t i = 0; i < count; i++)
        if (!CHECK(x[i] == (float)seq)) return 0;
    return 1;
}

static void pair(rl_node **learner, rl_node **actor, int *port) {
    rl_config lc, ac;
    rl_config_default(&lc, RL_ROLE_LEARNER);
    rl_config_default(&ac, RL_ROLE_ACTOR);
    lc.handshake_timeout_ms = 500;
    *learner = *actor = NULL;
    CHECK_EQ(rl_node_create(&lc, learner), RL_OK);
    CHECK_EQ(rl_node_listen(*learner, "127.0.0.1", 0, port), RL_OK);
    CHECK_EQ(rl_node_start(*learner), RL_OK);
    CHECK_EQ(rl_node_create(&ac, actor), RL_OK);
    rl_hello peer;
    CHECK_EQ(rl_node_connect(*actor, "127.0.0.1", *port, 5000, &peer), RL_OK);
    CHECK_EQU(peer.node_id, rl_node_id(*learner));
    CHECK_EQ(rl_node_start(*actor), RL_OK);
}

static void test_node_patterns(void) {
    rl_node *L, *A;
    int port = 0;
    pair(&L, &A, &port);
    /* many-to-one, small and large (direct-read) frames, in order */
    for (int64_t i = 0; i < 200; i++)
        CHECK_EQ(send_msg(A, 0, RL_KIND_TRAJ, 0, i, i % 50 == 0 ? 300000 : 8), RL_OK);
    for (int64_t i = 0; i < 200; i++) {
        rl_msg *m = NULL;
        if (!CHECK_EQ(rl_node_recv(L, RL_Q_TRAJ, &m, 1, 5000), 1)) break;
        CHECK_EQU(m->peer_id, rl_node_id(A));
        check_msg(m, i, i % 50 == 0 ? 300000 : 8);
        rl_msg_free(m);
    }
    /* one-to-many: only the newest unsent version matters */
    CHECK_EQ(send_msg(L, 0, RL_KIND_PARAMS, 7, 7, 1000), RL_OK);
    rl_msg *p = NULL;
    CHECK_EQ(rl_node_take_params(A, 6, 5000, &p), RL_OK);
    if (p) { CHECK_EQU(p->hdr.ref, 7); check_msg(p, 7, 1000); rl_msg_free(p); }
    /* request / reply, routed by request id */
    CHECK_EQ(send_msg(A, 0, RL_KIND_REQUEST, 42, 1, 4), RL_OK);
    rl_msg *q = NULL;
    CHECK_EQ(rl_node_recv(L, RL_Q_REQUEST, &q, 1, 5000), 1);
    if (q) {
        CHECK_EQU(q->hdr.ref, 42);
        CHECK_EQ(send_msg(L, q->peer_id, RL_KIND_REPLY, 42, 2, 4), RL_OK);
        rl_msg_free(q);
    }
    rl_msg *rep = NULL;
    CHECK_EQ(rl_node_wait_reply(A, 42, rl_node_conn_gen(A), 5000, &rep), RL_OK);
    if (rep) { check_msg(rep, 2, 4); rl_msg_free(rep); }
    /* timeouts */
    rl_msg *none = NULL;
    CHECK_EQ(rl_node_recv(L, RL_Q_TRAJ, &none, 1, 0), RL_ETIMEDOUT);
    CHECK_EQ(rl_node_wait_reply(A, 43, rl_node_conn_gen(A), 10, &none), RL_ETIMEDOUT);
    /* a learner that closes makes the actor's calls fail, not hang */
    rl_node_close(L, 1000);
    CHECK_EQ(rl_node_recv(A, RL_Q_PUSH, &none, 1, 5000), RL_ECONNLOST);
    CHECK(strlen(rl_node_lost_reason(A)) > 0);
    rl_node_close(A, 0);
    rl_node_close(A, 0);   /* idempotent */
    CHECK_EQ(rl_node_recv(A, RL_Q_PUSH, &none, 1, 0), RL_ECLOSED);
    rl_node_destroy(L);
    rl_node_destroy(A);
}

static void test_node_rejects_garbage(void) {
    rl_node *L, *A;
    int port = 0;
    pair(&L, &A, &port);
    /* a peer that sends garbage instead of a hello is dropped with a reason */
    int fd = rl_sock_connect("127.0.0.1", port, 2000);
    CHECK(fd >= 0);
    const char junk[32] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    void *b = (void *)junk;
    size_t l = sizeof junk;
    CHECK_EQ(rl_sock_writev(fd, &b, &l, 1), (long)sizeof junk);
    /* a silent peer is dropped at the handshake deadline (500 ms here) */
    int silent = rl_sock_connect("127.0.0.1", port, 2000);
    CHECK(silent >= 0);
    int rejected = 0;
    long long deadline = rl_now_ms() + 5000;
    while (rejected < 2 && rl_now_ms() < deadline) {
        rl_event ev;
        if (rl_node_next_event(L, &ev)) {
            if (ev.type == RL_EV_REJECTED) rejected++;
        } else {
            rl_sock_wait(fd, 1, 10);   /* bounded pause between polls */
        }
    }
    CHECK_EQ(rejected, 2);
    /* the good actor is still served */
    CHECK_EQ(send_msg(A, 0, RL_KIND_TRAJ, 0, 5, 8), RL_OK);
    rl_msg *m = NULL;
    CHECK_EQ(rl_node_recv(L, RL_Q_TRAJ, &m, 1, 5000), 1);
    if (m) { check_msg(m, 5, 8); rl_msg_free(m); }
    rl_closesocket(fd);
    rl_closesocket(silent);
    rl_node_close(A, 1000);
    rl_node_close(L, 1000);
    rl_node_destroy(A);
    rl_node_destroy(L);
}

/* Learner with key lkey, actor with key akey (NULL = none): connect once. */
static int keyed_connect(const char *lkey, const char *akey, rl_hello *peer, rl_event *ev) {
    rl_config lc, ac;
    rl_node *L = NULL, *A = NULL;
    int port = 0, rc;
    rl_config_default(&lc, RL_ROLE_LEARNER);
    rl_config_default(&ac, RL_ROLE_ACTOR);
    lc.auth_key = (const uint8_t *)lkey;
    lc.auth_key_len = lkey ? strlen(lkey) : 0;
    ac.auth_key = (const uint8_t *)akey;
    ac.auth_key_len = akey ? strlen(akey) : 0;
    CHECK_EQ(rl_node_create(&lc, &L), RL_OK);
    CHECK_EQ(rl_node_listen(L, "127.0.0.1", 0, &port), RL_OK);
    CHECK_EQ(rl_node_start(L), RL_OK);
    CHECK_EQ(rl_node_create(&ac, &A), RL_OK);
    rc = rl_node_connect(A, "127.0.0.1", port, 5000, peer);
    if (rc == RL_OK) {
        CHECK_EQ(rl_node_start(A), RL_OK);
        CHECK_EQ(send_msg(A, 0, RL_KIND_TRAJ, 0, 7, 16), RL_OK);
        rl_msg *m = NULL;
        if (CHECK_EQ(rl_node_recv(L, RL_Q_TRAJ, &m, 1, 5000), 1)) {
            CHECK(check_msg(m, 7, 16));
            rl_msg_free(m);
        }
    }
    /* the learner reports what happened to the connection */
    memset(ev, 0, sizeof *ev);
    for (int i = 0; i < 500 && !rl_node_next_event(L, ev); i++) rl_sleep_ms(10);
    rl_node_close(A, 100);
    rl_node_destroy(A);
    rl_node_close(L, 100);
    rl_node_destroy(L);
    return rc;
}

static void test_node_auth(void) {
    rl_hello peer;
    rl_event ev;
    CHECK_EQ(keyed_connect("correct horse battery staple", "correct horse battery staple", &peer, &ev), RL_OK);
    CHECK(peer.flags & RL_HELLO_AUTH);
    CHECK_EQ(ev.type, RL_EV_JOINED);

    CHECK_EQ(keyed_connect("correct horse battery staple", "wrong horse", &peer, &ev), RL_EAUTH);
    CHECK(peer.flags & RL_HELLO_AUTH);
    /* the actor found the learner's proof wrong and hung up: the learner
     * sees its handshake end before the proof */
    CHECK_EQ(ev.type, RL_EV_REJECTED);
    CHECK(strstr(ev.reason, "different auth_key") != NULL);

    CHECK_EQ(keyed_connect("a key only the learner has", NULL, &peer, &ev), RL_EAUTH);
    CHECK(peer.flags & RL_HELLO_AUTH);
    CHECK_EQ(ev.type, RL_EV_REJECTED);
    CHECK(strstr(ev.reason, "actor has no auth_key") != NULL);

    CHECK_EQ(keyed_connect(NULL, "a key only the actor has", &peer, &ev), RL_EAUTH);
    CHECK(!(peer.flags & RL_HELLO_AUTH));
    CHECK_EQ(ev.type, RL_EV_REJECTED);
    CHECK(strstr(ev.reason, "learner has none") != NULL);
}

static void test_node_max_connections(void) {
    rl_config lc;
    rl_node *L = NULL;
    int port = 0;
    rl_config_default(&lc, RL_ROLE_LEARNER);
    lc.max_connections = 2;
    CHECK_EQ(rl_node_create(&lc, &L), RL_OK);
    CHECK_EQ(rl_node_listen(L, "127.0.0.1", 0, &port), RL_OK);
    CHECK_EQ(rl_node_start(L), RL_OK);
    int fds[3];
    for (int i = 0; i < 3; i++) fds[i] = rl_sock_connect("127.0.0.1", port, 5000);
    /* the third is closed by the learner: a read sees EOF */
    char b;
    int got_eof = 0;
    for (int i = 0; i < 500 && !got_eof; i++) {
        ssize_t r = rl_sock_read(fds[2], &b, 1);
        if (r == 0) got_eof = 1;
        else rl_sleep_ms(10);
    }
    CHECK(got_eof);
    rl_event ev;
    memset(&ev, 0, sizeof ev);
    for (int i = 0; i < 500 && !rl_node_next_event(L, &ev); i++) rl_sleep_ms(10);
    CHECK_EQ(ev.type, RL_EV_REJECTED);
    CHECK(strstr(ev.reason, "max_connections") != NULL);
    for (int i = 0; i < 3; i++) if (fds[i] >= 0) rl_closesocket(fds[i]);
    rl_node_close(L, 100);
    rl_node_destroy(L);
}

/* close() wakes a sender blocked writing a large frame to a learner that
 * has stopped reading (its queue of one is full): the send fails with
 * RL_ECLOSED at once; it neither waits for its deadline nor completes. */
static struct { rl_node *a; int rc; } dw_arg;
static RL_THREAD_RESULT RL_THREAD_CALL dw_sender(void *arg) {
    (void)arg;
    dw_arg.rc = send_msg(dw_arg.a, 0, RL_KIND_TRAJ, 0, 2, (size_t)16 << 20);   /* 64 MiB */
    return 0;
}

static void test_node_close_wakes_direct_writer(void) {
    rl_config lc, ac;
    rl_config_default(&lc, RL_ROLE_LEARNER);
    rl_config_default(&ac, RL_ROLE_ACTOR);
    lc.queue_max_msgs = 1;
    lc.local = ac.local = 0;   /* TCP: the frame goes on the stream, not in a region */
    rl_node *L = NULL, *A = NULL;
    int port = 0;
    rl_hello peer;
    rl_stats st;
    if (!CHECK_EQ(rl_node_create(&lc, &L), RL_OK)) return;
    CHECK_EQ(rl_node_listen(L, "127.0.0.1", 0, &port), RL_OK);
    CHECK_EQ(rl_node_start(L), RL_OK);
    if (!CHECK_EQ(rl_node_create(&ac, &A), RL_OK)) return;
    CHECK_EQ(rl_node_connect(A, "127.0.0.1", port, 5000, &peer), RL_OK);
    CHECK_EQ(rl_node_start(A), RL_OK);
    CHECK_EQ(send_msg(A, 0, RL_KIND_TRAJ, 0, 1, 4), RL_OK);
    /* once the learner has queued it, it reads nothing more */
    rl_node_stats(L, &st);
    for (int i = 0; i < 500 && st.received < 1; i++) { rl_sleep_ms(10); rl_node_stats(L, &st); }
    CHECK_EQU(st.received, 1);
    dw_arg.a = A;
    dw_arg.rc = 0;
    rl_thread t;
    if (CHECK_EQ(rl_thread_create(&t, dw_sender, NULL), 0)) {
        /* until the sender has counted the frame (it writes it next) */
        rl_node_stats(A, &st);
        for (int i = 0; i < 5000 && st.sent < 2; i++) { rl_sleep_ms(1); rl_node_stats(A, &st); }
        rl_node_close(A, 0);
        rl_thread_join(t);
        /* woken: a send ended by its deadline would have queued the rest
         * and returned RL_OK */
        CHECK_EQ(dw_arg.rc, RL_ECLOSED);
    }
    rl_node_destroy(A);
    rl_node_close(L, 100);
    rl_node_destroy(L);
}

/* Request/reply waits spin for wait_spin_us before they sleep on the node's
 * condition variable. A reply queued (and its wake-up broadcast) between the
 * spin's last look and the sleep must not be slept through: before the
 * fix, about one round trip in 1,000-5,000 here waited out its whole
 * timeout with the reply already queued (and the learner's request waits
 * likewise). The learner answers after 0-80 us, across the spin's end. */
enum { RR_TRIPS = 3000 };
static struct { rl_node *l; int answered; } rr;

static RL_THREAD_RESULT RL_THREAD_CALL rr_learner(void *arg) {
    (void)arg;
    unsigned s = 1;
    for (int i = 0; i < RR_TRIPS; i++) {
        rl_msg *q = NULL;
        if (rl_node_recv(rr.l, RL_Q_REQUEST, &q, 1, 10000) != 1) break;
        s = s * 1103515245u + 12345u;
        long long until = rl_mono_ns() + (long long)((s >> 8) % 80000);
        while (rl_mono_ns() < until) RL_CPU_RELAX();
        if (send_msg(rr.l, q->peer_id, RL_KIND_REPLY, q->hdr.ref, 0, 1) == RL_OK) rr.answered++;
        rl_msg_free(q);
    }
    return 0;
}

static void test_node_request_reply_spin_then_sleep(void) {
    rl_config lc, ac;
    rl_config_default(&lc, RL_ROLE_LEARNER);
    rl_config_default(&ac, RL_ROLE_ACTOR);
    ac.wait_spin_us = 20;
    lc.wait_spin_us = 20;
    rl_node *L = NULL, *A = NULL;
    int port = 0;
    rl_hello peer;
    if (!CHECK_EQ(rl_node_create(&lc, &L), RL_OK)) return;
    CHECK_EQ(rl_node_listen(L, "127.0.0.1", 0, &port), RL_OK);
    CHECK_EQ(rl_node_start(L), RL_OK);
    if (!CHECK_EQ(rl_node_create(&ac, &A), RL_OK)) { rl_node_destroy(L); return; }
    CHECK_EQ(rl_node_connect(A, "127.0.0.1", port, 5000, &peer), RL_OK);
    CHECK_EQ(rl_node_start(A), RL_OK);
    rr.l = L;
    rr.answered = 0;
    rl_thread t;
    if (CHECK_EQ(rl_thread_create(&t, rr_learner, NULL), 0)) {
        int late = 0;
        for (int i = 1; i <= RR_TRIPS && late == 0; i++) {
            if (!CHECK_EQ(send_msg(A, 0, RL_KIND_REQUEST, (uint64_t)i, i, 1), RL_OK)) break;
            rl_msg *rep = NULL;
            /* seconds to spare: only a lost wake-up takes this long */
            int rc = rl_node_wait_reply(A, (uint64_t)i, rl_node_conn_gen(A), 3000, &rep);
            if (rc != RL_OK) late = i;
            if (rep) rl_msg_free(rep);
        }
        CHECK_EQ(late, 0);
        rl_node_close(L, 0);   /* ends the learner thread's wait, if any */
        rl_thread_join(t);
        CHECK_EQ(rr.answered, RR_TRIPS);
    }
    rl_node_destroy(A);
    rl_node_destroy(L);
}

static const rl_test node_tests[] = {
    RL_TEST(test_node_patterns),
    RL_TEST(test_node_rejects_garbage),
    RL_TEST(test_node_auth),
    RL_TEST(test_node_max_connections),
    RL_TEST(test_node_close_wakes_direct_writer),
    RL_TEST(test_node_request_reply_spin_then_sleep),
};

void run_node_tests(void) { RL_RUN_SUITE(node_tests); }
