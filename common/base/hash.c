#include "hash.h"

#include <string.h>

uint64_t hash_bytes(const void *data, size_t len, uint64_t seed)
{
	const uint64_t m = 0xc6a4a7935bd1e995ULL;
	const int r = 47;
	const unsigned char *p = data;
	uint64_t h = seed ^ (len * m);

	size_t blocks = len / 8;
	for (size_t i = 0; i < blocks; i++) {
		uint64_t k;
		memcpy(&k, p + i * 8, 8);
		k *= m;
		k ^= k >> r;
		k *= m;
		h ^= k;
		h *= m;
	}
	const unsigned char *tail = p + blocks * 8;
	switch (len & 7) {
	case 7:
		h ^= (uint64_t)tail[6] << 48; /* fall through */
	case 6:
		h ^= (uint64_t)tail[5] << 40; /* fall through */
	case 5:
		h ^= (uint64_t)tail[4] << 32; /* fall through */
	case 4:
		h ^= (uint64_t)tail[3] << 24; /* fall through */
	case 3:
		h ^= (uint64_t)tail[2] << 16; /* fall through */
	case 2:
		h ^= (uint64_t)tail[1] << 8; /* fall through */
	case 1:
		h ^= (uint64_t)tail[0];
		h *= m;
	}
	h ^= h >> r;
	h *= m;
	h ^= h >> r;
	return h;
}
