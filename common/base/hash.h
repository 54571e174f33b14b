/* Fast non-cryptographic hashing for the in-memory namespace and its digest.
 * Not for anything an attacker could exploit: tokens use HMAC-SHA256. */
#ifndef MP_HASH_H
#define MP_HASH_H

#include <stddef.h>
#include <stdint.h>

/* MurmurHash64A by Austin Appleby (public domain), seeded. */
uint64_t hash_bytes(const void *data, size_t len, uint64_t seed);

/* A bijective 64-bit mixer (the splitmix64 finaliser). */
static inline uint64_t hash_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

#endif
