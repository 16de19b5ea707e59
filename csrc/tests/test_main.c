/*
 * test_main.c -- runs every C test suite.
 *
 * Build (from the repository root):
 *   gcc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined \
 *       -fno-sanitize-recover=all -Icsrc <every .c in csrc/ and csrc/tests/> \
 *       -pthread -o /tmp/rl_ctest && /tmp/rl_ctest
 *
 * Prints one line per failed check and one per skipped test ("SKIP name:
 * reason"), then "N skipped" if any, then "N passed, N failed" (test
 * functions). Exit status is 0 only if nothing failed. Pass `-v` to also
 * print the number of individual checks.
 */
#define RL_TEST_IMPLEMENTATION
#include "rl_test.h"

#include <string.h>

int main(int argc, char **argv) {
    int verbose = argc > 1 && strcmp(argv[1], "-v") == 0;

    /* one call per test file */
    run_crc_tests();
    run_frame_tests();
    run_ring_tests();
    run_auth_tests();
    run_shm_tests();
    run_node_tests();
    run_os_tests();
    run_resilience_tests();

    if (verbose) printf("%lu checks\n", rl_test_g.checks);
    if (rl_test_g.skipped) printf("%lu skipped\n", rl_test_g.skipped);
    printf("%lu passed, %lu failed\n", rl_test_g.passed, rl_test_g.failed);
    return rl_test_g.failed ? 1 : 0;
}
