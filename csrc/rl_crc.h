/*
 * rl_crc.h -- CRC32C (Castagnoli, the iSCSI polynomial 0x1EDC6F41,
 * reflected; the same function as RFC 3720's and Linux's crc32c).
 *
 * Reliable links checksum every frame (PROTOCOL.md 4.3), so this is on the
 * data path of every byte they carry: the sender checksums while it copies
 * a trajectory into its retained window, the receiver while the bytes are
 * still in cache after the read. The implementation picks, once, the
 * fastest path the CPU has: carry-less multiplication folding over 64-byte
 * vectors (AVX-512 VPCLMULQDQ, ~57 GB/s on the project VM, where a copy
 * fused with it runs at memcpy speed), the SSE4.2 crc32 instruction in
 * three interleaved streams (~35 GB/s), or a portable slicing-by-8 table
 * (~2.5 GB/s). All paths give identical results (tests compare them
 * on every length and alignment).
 *
 * Every function is pure and thread-safe; the first call initialises
 * constant tables idempotently.
 */
#ifndef RL_CRC_H
#define RL_CRC_H

#include <stddef.h>
#include <stdint.h>

/* CRC32C of n bytes at p, continuing from crc (start with 0):
 * rl_crc32c(rl_crc32c(0, a, k), a + k, n - k) == rl_crc32c(0, a, n). */
uint32_t rl_crc32c(uint32_t crc, const void *p, size_t n);

/* Copy n bytes from src to dst (which must not overlap) and return the
 * CRC32C of those bytes continuing from crc: one pass over the source
 * instead of a memcpy and a second read. */
uint32_t rl_crc32c_copy(uint32_t crc, void *dst, const void *src, size_t n);

/* Tests only: cap the implementation used by later calls (not thread-safe).
 * 0 = best available (default), 1 = at most the SSE4.2 crc32 instruction,
 * 2 = the portable table only. */
extern int rl_crc32c_force_level;

#endif
