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

static const rl_test resilience_tests[] = {
    RL_TEST(test_reliable_learner_restart),
    RL_TEST(test_peer_timeout),
};

void run_resilience_tests(void) { RL_RUN_SUITE(resilience_tests); }
