/*
 * rl_test.h -- a tiny self-contained test framework for the C core.
 *
 * Usage in a test file (e.g. test_ring.c):
 *
 *     #include "rl_test.h"
 *
 *     static void test_something(void) {
 *         CHECK(1 + 1 == 2);
 *         CHECK_EQ(rl_foo(), RL_OK);          // prints both values on failure
 *         if (!CHECK(p != NULL)) return;      // CHECK is an expression
 *     }
 *
 *     static const rl_test ring_tests[] = {
 *         RL_TEST(test_something),
 *     };
 *     void run_ring_tests(void) { RL_RUN_SUITE(ring_tests); }
 *
 * then declare `void run_ring_tests(void);` below, call it from main() in
 * test_main.c and add the file to the build command.
 *
 * A failed check prints one line "file:line: test: CHECK(expr) failed" and
 * marks the current test failed; the test keeps running. test_main.c prints
 * the final "N passed, N failed" line, counting test functions (after an
 * "N skipped" line if RL_SKIP skipped any).
 *
 * Exactly one translation unit (test_main.c) defines RL_TEST_IMPLEMENTATION
 * before including this header; it gets the counters and functions.
 */
#ifndef RL_TEST_H
#define RL_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- suites: one declaration per test file ---------------------------- */
/* test_node.c: a message {"seq": seq, "x": float32[count] filled with seq},
 * sent to peer (or published, for RL_KIND_PARAMS); and the check of one. */
struct rl_node;
struct rl_msg;
int send_msg(struct rl_node *n, uint64_t peer, unsigned kind, uint64_t ref, int64_t seq, size_t count);
int check_msg(struct rl_msg *m, int64_t seq, size_t count);

void run_frame_tests(void);   /* test_frame.c */
void run_ring_tests(void);    /* test_ring.c */
void run_node_tests(void);    /* test_node.c */
void run_auth_tests(void);    /* test_auth.c */
void run_os_tests(void);      /* test_os.c */
void run_crc_tests(void);     /* test_crc.c */
void run_shm_tests(void);     /* test_shm.c */
void run_resilience_tests(void); /* test_resilience.c */

/* ---- framework --------------------------------------------------------- */
typedef struct rl_test {
    const char *name;
    void (*fn)(void);
} rl_test;

#define RL_TEST(fn) { #fn, fn }
#define RL_COUNTOF(a) (sizeof(a) / sizeof((a)[0]))
#define RL_RUN_SUITE(table) rl_test_run_suite(#table, (table), RL_COUNTOF(table))

/* After this many printed failures in one test, further ones are counted
 * but not printed (mutation loops could otherwise print millions). */
#define RL_TEST_MAX_PRINTED 50

typedef struct rl_test_state {
    const char *current;       /* name of the running test */
    unsigned long failures;    /* failed checks in the running test */
    unsigned long checks;      /* checks run, all tests */
    unsigned long passed;      /* test functions that passed */
    unsigned long failed;      /* test functions that failed */
    unsigned long skipped;     /* test functions that called RL_SKIP (and failed no check) */
    const char *skip_reason;   /* set by RL_SKIP in the running test */
} rl_test_state;

extern rl_test_state rl_test_g;

/* Record one check; returns ok so CHECK can be used in conditions. */
int rl_test_check(int ok, const char *file, int line, const char *expr);
int rl_test_check_eq(int64_t a, int64_t b, const char *file, int line,
                     const char *ea, const char *eb);
int rl_test_check_equ(uint64_t a, uint64_t b, const char *file, int line,
                      const char *ea, const char *eb);
void rl_test_run_suite(const char *suite, const rl_test *tests, size_t n);

/* Mark the running test skipped (it counts neither as passed nor as failed;
 * "SKIP name: reason" is printed) and return from it. Only for what this
 * platform truly lacks; say what in the reason. */
#define RL_SKIP(reason) do { rl_test_g.skip_reason = (reason); return; } while (0)

#define CHECK(cond) rl_test_check((cond) ? 1 : 0, __FILE__, __LINE__, #cond)
/* Signed comparison (error codes, ints); prints both values on failure. */
#define CHECK_EQ(a, b) \
    rl_test_check_eq((int64_t)(a), (int64_t)(b), __FILE__, __LINE__, #a, #b)
/* Unsigned 64-bit comparison (sizes, offsets, ids). */
#define CHECK_EQU(a, b) \
    rl_test_check_equ((uint64_t)(a), (uint64_t)(b), __FILE__, __LINE__, #a, #b)

/* ---- implementation (test_main.c only) -------------------------------- */
#ifdef RL_TEST_IMPLEMENTATION

rl_test_state rl_test_g;

static void rl_test_fail_line(const char *file, int line) {
    rl_test_g.failures++;
    if (rl_test_g.failures == RL_TEST_MAX_PRINTED + 1)
        printf("%s:%d: %s: more failures in this test; not printing them\n", file,
               line, rl_test_g.current ? rl_test_g.current : "?");
}

int rl_test_check(int ok, const char *file, int line, const char *expr) {
    rl_test_g.checks++;
    if (ok) return 1;
    rl_test_fail_line(file, line);
    if (rl_test_g.failures <= RL_TEST_MAX_PRINTED)
        printf("%s:%d: %s: CHECK(%s) failed\n", file, line,
               rl_test_g.current ? rl_test_g.current : "?", expr);
    fflush(stdout);
    return 0;
}

int rl_test_check_eq(int64_t a, int64_t b, const char *file, int line,
                     const char *ea, const char *eb) {
    rl_test_g.checks++;
    if (a == b) return 1;
    rl_test_fail_line(file, line);
    if (rl_test_g.failures <= RL_TEST_MAX_PRINTED)
        printf("%s:%d: %s: CHECK_EQ(%s, %s) failed: %lld != %lld\n", file, line,
               rl_test_g.current ? rl_test_g.current : "?", ea, eb, (long long)a,
               (long long)b);
    fflush(stdout);
    return 0;
}

int rl_test_check_equ(uint64_t a, uint64_t b, const char *file, int line,
                      const char *ea, const char *eb) {
    rl_test_g.checks++;
    if (a == b) return 1;
    rl_test_fail_line(file, line);
    if (rl_test_g.failures <= RL_TEST_MAX_PRINTED)
        printf("%s:%d: %s: CHECK_EQU(%s, %s) failed: %llu != %llu\n", file, line,
               rl_test_g.current ? rl_test_g.current : "?", ea, eb,
               (unsigned long long)a, (unsigned long long)b);
    fflush(stdout);
    return 0;
}

void rl_test_run_suite(const char *suite, const rl_test *tests, size_t n) {
    (void)suite;
    for (size_t i = 0; i < n; i++) {
        rl_test_g.current = tests[i].name;
        rl_test_g.failures = 0;
        rl_test_g.skip_reason = NULL;
        tests[i].fn();
        if (rl_test_g.failures) {
            rl_test_g.failed++;
            printf("FAIL %s (%lu failed checks)\n", tests[i].name, rl_test_g.failures);
        } else if (rl_test_g.skip_reason) {
            rl_test_g.skipped++;
            printf("SKIP %s: %s\n", tests[i].name, rl_test_g.skip_reason);
        } else {
            rl_test_g.passed++;
        }
        fflush(stdout);
    }
    rl_test_g.current = NULL;
}

#endif /* RL_TEST_IMPLEMENTATION */
#endif /* RL_TEST_H */
