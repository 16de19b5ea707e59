/* C floors for the rlink benchmarks: what the kernel and the memory system
 * allow on this machine, with no Python and no library in the way.
 *
 *   floors pingpong N WARMUP [spin] [unix]
 *                                   TCP loopback, 64-byte messages, TCP_NODELAY,
 *                                   one process sends and waits for the echo from
 *                                   another: round-trip quantiles in microseconds.
 *                                   "spin": both sides busy-poll non-blocking sockets
 *                                   instead of sleeping in read() (no wake-ups: shows
 *                                   what sleeping and waking costs on this machine).
 *                                   "unix": over an AF_UNIX stream socket instead
 *   floors stream MIB WARMUP_MIB [SOCKBUF] [unix]
 *                                   TCP loopback, 1 MiB write()s, receiver read()s
 *                                   whole MiB chunks into one buffer: GB/s. SOCKBUF > 0
 *                                   sets SO_SNDBUF/SO_RCVBUF (bytes) on both ends, as
 *                                   rlink does (4 MiB); 0 leaves the kernel's autotuning
 *                                   (AF_UNIX: the default buffer; it has no autotuning).
 *                                   "unix": over an AF_UNIX stream socket instead
 *   floors msgs tcp|unix single|writev N WARMUP
 *                                   100-byte messages with a 4-byte length prefix;
 *                                   "single": one write() per message, "writev":
 *                                   64 messages per writev(); receiver reads 64 KiB
 *                                   at a time and parses: messages/s
 *   floors w2stream N WARMUP plain|crc|crc-copy
 *                                   TCP loopback, N messages of W2's size from a pool
 *                                   of 8, each behind a 16-byte header: plain, or with
 *                                   what reliable mode adds (see checked_stream): GB/s
 *   floors memcpy MIB REPS          memcpy between two MIB buffers: GB/s (best rep)
 *
 * Sender and receiver are separate processes (fork). Every message or chunk
 * carries a sequence number and a derived last byte that the receiver checks.
 * Each mode prints one JSON object on stdout. Build, from the repository root:
 * cc -O2 -Icsrc -o floors benchmarks/floors.c csrc/rl_crc.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rl_crc.h"

#define DIE(...) do { fprintf(stderr, "floors: " __VA_ARGS__); fprintf(stderr, " (%s)\n", strerror(errno)); exit(2); } while (0)
#define FAIL(...) do { fprintf(stderr, "floors: CHECK FAILED: " __VA_ARGS__); fprintf(stderr, "\n"); exit(3); } while (0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint8_t stamp_byte(uint64_t seq) { return (uint8_t)(seq * 131 + 7); }

static char unix_path[108];

static int listen_on(int family, int *port) {
    int s;
    if (family == AF_UNIX) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(unix_path, sizeof unix_path, "/tmp/rlink-floor-%d.sock", (int)getpid());
        unlink(unix_path);
        strcpy(a.sun_path, unix_path);
        s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) DIE("bind unix");
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        int one = 1;
        s = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) DIE("bind");
        getsockname(s, (struct sockaddr *)&a, &len);
        *port = ntohs(a.sin_port);
    }
    if (listen(s, 4) < 0) DIE("listen");
    return s;
}

static void set_bufs(int s, int bytes) {
    if (bytes <= 0) return;
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

/* sockbuf > 0: socket buffer sizes, set before connecting (TCP's window
 * scale is fixed at the handshake). */
static int connect_to(int family, int port, int nodelay, int sockbuf) {
    int s = socket(family, SOCK_STREAM, 0);
    set_bufs(s, sockbuf);
    if (family == AF_UNIX) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        strcpy(a.sun_path, unix_path);
        if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) DIE("connect unix");
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                .sin_port = htons(port)};
        if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) DIE("connect");
        if (nodelay) setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay);
    }
    return s;
}

static int accept_one(int ls, int family, int nodelay) {
    int s = accept(ls, NULL, NULL);
    if (s < 0) DIE("accept");
    if (family != AF_UNIX && nodelay) setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay);
    close(ls);
    return s;
}

static void write_all(int s, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(s, c, n);
        if (w < 0) { if (errno == EINTR) continue; DIE("write"); }
        c += w; n -= (size_t)w;
    }
}

static void read_all(int s, void *p, size_t n) {
    char *c = p;
    while (n) {
        ssize_t r = read(s, c, n);
        if (r < 0) { if (errno == EINTR || errno == EAGAIN) continue; DIE("read"); }
        if (r == 0) FAIL("peer closed early");
        c += r; n -= (size_t)r;
    }
}

static int wait_child(pid_t pid) {
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------ pingpong */
static int pingpong(int family, long n, long warm, int spin) {
    int port = 0, ls = listen_on(family, &port);
    pid_t pid = fork();
    if (pid == 0) {                       /* echo server */
        int s = connect_to(family, port, 1, 0);
        if (spin) fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
        uint8_t m[64];
        for (long i = 0; i < n + warm; i++) {
            read_all(s, m, 64);
            write_all(s, m, 64);
        }
        close(s);
        _exit(0);
    }
    int s = accept_one(ls, family, 1);
    if (spin) fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    double *rtt = malloc(sizeof(double) * (size_t)n), sum = 0;
    uint8_t m[64], r[64];
    memset(m, 0, 64);
    for (long i = 0; i < n + warm; i++) {
        uint64_t seq = (uint64_t)i;
        memcpy(m, &seq, 8);
        m[63] = stamp_byte(seq);
        double t = now();
        write_all(s, m, 64);
        read_all(s, r, 64);
        double dt = now() - t;
        if (memcmp(m, r, 64)) FAIL("echo %ld differs", i);
        if (i >= warm) { rtt[i - warm] = dt * 1e6; sum += dt * 1e6; }
    }
    close(s);
    if (family == AF_UNIX) unlink(unix_path);
    if (wait_child(pid)) FAIL("echo server failed");
    qsort(rtt, (size_t)n, sizeof(double), cmp_double);
    printf("{\"floor\": \"%s_pingpong_64B%s\", \"n\": %ld, \"mean_us\": %.3f, \"p50_us\": %.3f, "
           "\"p99_us\": %.3f, \"p999_us\": %.3f, \"quantiles_us\": [",
           family == AF_UNIX ? "unix" : "tcp", spin ? "_spin" : "", n, sum / n,
           rtt[n / 2], rtt[(long)(n * 0.99)], rtt[(long)(n * 0.999)]);
    for (int q = 0; q <= 200; q++) {
        long idx = (long)((double)q / 200 * (n - 1));
        printf("%s%.3f", q ? ", " : "", rtt[idx]);
    }
    printf("]}\n");
    free(rtt);
    return 0;
}

/* -------------------------------------------------------------- stream */
#define CHUNK (1u << 20)
static int stream(int family, long mib, long warm_mib, int sockbuf) {
    int port = 0, ls = listen_on(family, &port);
    set_bufs(ls, sockbuf);   /* inherited by the accepted socket */
    long total = mib + warm_mib;
    pid_t pid = fork();
    if (pid == 0) {
        int s = connect_to(family, port, 0, sockbuf);
        uint8_t *b = malloc(CHUNK);
        memset(b, 0x5a, CHUNK);
        for (long i = 0; i < total; i++) {
            uint64_t seq = (uint64_t)i;
            memcpy(b, &seq, 8);
            b[CHUNK - 1] = stamp_byte(seq);
            write_all(s, b, CHUNK);
        }
        close(s);
        _exit(0);
    }
    int s = accept_one(ls, family, 0);
    uint8_t *b = malloc(CHUNK);
    double t0 = 0;
    for (long i = 0; i < total; i++) {
        if (i == warm_mib) t0 = now();
        read_all(s, b, CHUNK);
        uint64_t seq;
        memcpy(&seq, b, 8);
        if (seq != (uint64_t)i || b[CHUNK - 1] != stamp_byte(seq)) FAIL("chunk %ld", i);
    }
    double dt = now() - t0;
    close(s);
    if (family == AF_UNIX) unlink(unix_path);
    if (wait_child(pid)) FAIL("sender failed");
    printf("{\"floor\": \"%s_stream_1MiB\", \"sockbuf\": %d, \"bytes\": %ld, \"seconds\": %.6f, "
           "\"GBps\": %.4f}\n", family == AF_UNIX ? "unix" : "tcp", sockbuf, mib * (long)CHUNK, dt,
           mib * (double)CHUNK / dt / 1e9);
    return 0;
}

/* ------------------------------------------------------- checked stream */
/* What reliable mode must add to a W2 stream, done in plain C: messages of
 * W2's size from a pool of 8 (as the suite's W2 payloads), each behind a
 * 16-byte header (sequence, length, CRC32C). check 0: no checksum (the
 * baseline for the two others, with the same pool); 1: the sender
 * checksums each message before writing it and the receiver checksums what
 * it reads while it is in cache, as rlink's reliable links do (the
 * copy=False path); 2: as 1, and the sender copies the message into a
 * retained window (8 slots, round robin) in the same pass as its checksum
 * and writes from that copy (the default path's work, on one core). The
 * CRC32C is rlink's own (csrc/rl_crc.c). */
#define W2_BYTES 1811776u
#define W2_POOL 8
static int checked_stream(long n, long warm, int check) {
    static const char *names[] = {"tcp_w2_stream", "tcp_w2_stream_crc", "tcp_w2_stream_crc_copy"};
    int port = 0, ls = listen_on(AF_INET, &port);
    long total = n + warm;
    pid_t pid = fork();
    if (pid == 0) {
        int s = connect_to(AF_INET, port, 0, 0);
        uint8_t *pool[W2_POOL], *slot[W2_POOL];
        for (int i = 0; i < W2_POOL; i++) {
            pool[i] = malloc(W2_BYTES);
            slot[i] = check == 2 ? malloc(W2_BYTES) : NULL;
            if (!pool[i] || (check == 2 && !slot[i])) DIE("malloc");
            for (size_t j = 0; j < W2_BYTES; j++) pool[i][j] = (uint8_t)(j * 7 + (size_t)i);
            if (slot[i]) memset(slot[i], 0, W2_BYTES);
        }
        for (long i = 0; i < total; i++) {
            uint8_t *body = pool[i % W2_POOL];
            uint64_t hdr[2] = {(uint64_t)i, W2_BYTES};
            body[W2_BYTES - 1] = stamp_byte((uint64_t)i);
            uint32_t crc = 0;
            if (check == 1) crc = rl_crc32c(0, body, W2_BYTES);
            if (check == 2) {
                crc = rl_crc32c_copy(0, slot[i % W2_POOL], body, W2_BYTES);
                body = slot[i % W2_POOL];
            }
            hdr[1] |= (uint64_t)crc << 32;
            struct iovec v[2] = {{hdr, sizeof hdr}, {body, W2_BYTES}};
            size_t left = sizeof hdr + W2_BYTES;
            while (left) {
                ssize_t w = writev(s, v, 2);
                if (w < 0) { if (errno == EINTR) continue; DIE("writev"); }
                left -= (size_t)w;
                for (int k = 0; k < 2 && w > 0; k++) {
                    size_t t = (size_t)w < v[k].iov_len ? (size_t)w : v[k].iov_len;
                    v[k].iov_base = (uint8_t *)v[k].iov_base + t;
                    v[k].iov_len -= t;
                    w -= (ssize_t)t;
                }
            }
        }
        close(s);
        _exit(0);
    }
    int s = accept_one(ls, AF_INET, 0);
    uint8_t *b = malloc(W2_BYTES);
    if (!b) DIE("malloc");
    double t0 = 0;
    for (long i = 0; i < total; i++) {
        if (i == warm) t0 = now();
        uint64_t hdr[2];
        read_all(s, hdr, sizeof hdr);
        if (hdr[0] != (uint64_t)i || (uint32_t)hdr[1] != W2_BYTES) FAIL("message %ld header", i);
        uint32_t crc = 0;
        size_t have = 0;
        while (have < W2_BYTES) {   /* checksum each read while it is in cache */
            ssize_t r = read(s, b + have, W2_BYTES - have);
            if (r < 0) { if (errno == EINTR) continue; DIE("read"); }
            if (r == 0) FAIL("peer closed early");
            if (check) crc = rl_crc32c(crc, b + have, (size_t)r);
            have += (size_t)r;
        }
        if (b[W2_BYTES - 1] != stamp_byte((uint64_t)i)) FAIL("message %ld last byte", i);
        if (check && crc != (uint32_t)(hdr[1] >> 32)) FAIL("message %ld checksum", i);
    }
    double dt = now() - t0;
    close(s);
    if (wait_child(pid)) FAIL("sender failed");
    printf("{\"floor\": \"%s\", \"n\": %ld, \"seconds\": %.6f, \"GBps\": %.4f}\n", names[check], n,
           dt, n * (double)W2_BYTES / dt / 1e9);
    return 0;
}

/* ---------------------------------------------------------------- msgs */
#define MSG 100
#define FRAME (4 + MSG)
#define BATCH 64
static int msgs(int family, int use_writev, long n, long warm) {
    int port = 0, ls = listen_on(family, &port);
    long total = n + warm;
    pid_t pid = fork();
    if (pid == 0) {
        int s = connect_to(family, port, 0, 0);
        static uint8_t frames[BATCH][FRAME];
        struct iovec iov[BATCH];
        for (int k = 0; k < BATCH; k++) {
            uint32_t len = MSG;
            memcpy(frames[k], &len, 4);
            memset(frames[k] + 12, 0x33, MSG - 8);
            iov[k].iov_base = frames[k];
            iov[k].iov_len = FRAME;
        }
        for (long i = 0; i < total;) {
            int k = 0;
            for (; k < (use_writev ? BATCH : 1) && i < total; k++, i++) {
                uint64_t seq = (uint64_t)i;
                memcpy(frames[k] + 4, &seq, 8);
                frames[k][FRAME - 1] = stamp_byte(seq);
            }
            if (!use_writev) { write_all(s, frames[0], FRAME); continue; }
            struct iovec *v = iov;
            int cnt = k;
            size_t left = (size_t)k * FRAME;
            while (left) {       /* writev may write part of the batch */
                ssize_t w = writev(s, v, cnt);
                if (w < 0) { if (errno == EINTR) continue; DIE("writev"); }
                left -= (size_t)w;
                while (cnt && (size_t)w >= v->iov_len) { w -= (ssize_t)v->iov_len; v++; cnt--; }
                if (cnt && w) { v->iov_base = (char *)v->iov_base + w; v->iov_len -= (size_t)w; }
            }
            for (int j = 0; j < BATCH; j++) { iov[j].iov_base = frames[j]; iov[j].iov_len = FRAME; }
        }
        close(s);
        _exit(0);
    }
    int s = accept_one(ls, family, 0);
    enum { RB = 65536 };
    static uint8_t buf[RB + FRAME];
    size_t have = 0;
    long got = 0;
    double t0 = now();
    while (got < total) {
        ssize_t r = read(s, buf + have, RB - have);
        if (r < 0) { if (errno == EINTR) continue; DIE("read"); }
        if (r == 0) FAIL("peer closed after %ld messages", got);
        have += (size_t)r;
        size_t off = 0;
        while (have - off >= FRAME) {
            uint32_t len;
            uint64_t seq;
            memcpy(&len, buf + off, 4);
            memcpy(&seq, buf + off + 4, 8);
            if (len != MSG || seq != (uint64_t)got || buf[off + FRAME - 1] != stamp_byte(seq))
                FAIL("message %ld", got);
            off += FRAME;
            if (++got == warm) t0 = now();
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
    double dt = now() - t0;
    close(s);
    if (family == AF_UNIX) unlink(unix_path);
    if (wait_child(pid)) FAIL("sender failed");
    printf("{\"floor\": \"%s_100B_%s\", \"n\": %ld, \"seconds\": %.6f, \"msgps\": %.1f}\n",
           family == AF_UNIX ? "unix" : "tcp", use_writev ? "writev64" : "write1", n, dt, n / dt);
    return 0;
}

/* -------------------------------------------------------------- memcpy */
static int bench_memcpy(long mib, int reps) {
    size_t n = (size_t)mib << 20;
    uint8_t *a = malloc(n), *b = malloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        a[n - 1] = (uint8_t)r;
        double t = now();
        memcpy(b, a, n);
        double dt = now() - t;
        if (b[n - 1] != (uint8_t)r) FAIL("memcpy");
        if (dt < best) best = dt;
    }
    printf("{\"floor\": \"memcpy\", \"bytes\": %zu, \"seconds\": %.6f, \"GBps\": %.4f}\n",
           n, best, n / best / 1e9);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    /* a trailing "unix" selects AF_UNIX for pingpong and stream (TCP otherwise) */
    int unix_last = argc >= 5 && !strcmp(argv[argc - 1], "unix");
    int family = unix_last ? AF_UNIX : AF_INET, nargs = argc - unix_last;
    if (argc >= 4 && !strcmp(argv[1], "pingpong"))
        return pingpong(family, atol(argv[2]), atol(argv[3]), nargs >= 5 && !strcmp(argv[4], "spin"));
    if (argc >= 4 && !strcmp(argv[1], "stream"))
        return stream(family, atol(argv[2]), atol(argv[3]), nargs >= 5 ? atoi(argv[4]) : 0);
    if (argc >= 6 && !strcmp(argv[1], "msgs"))
        return msgs(strcmp(argv[2], "unix") ? AF_INET : AF_UNIX, !strcmp(argv[3], "writev"),
                    atol(argv[4]), atol(argv[5]));
    if (argc >= 5 && !strcmp(argv[1], "w2stream"))
        return checked_stream(atol(argv[2]), atol(argv[3]),
                              !strcmp(argv[4], "crc") ? 1 : !strcmp(argv[4], "crc-copy") ? 2 : 0);
    if (argc >= 4 && !strcmp(argv[1], "memcpy")) return bench_memcpy(atol(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: see the comment at the top of floors.c\n");
    return 1;
}
