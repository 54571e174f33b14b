/* Weighted rendezvous hashing (common/base/hrw.c): block ids, orderings that are
 * deterministic permutations with weight-0 nodes last, minimal movement
 * when a node joins or leaves, and shares that follow the weights. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "hrw.h"

#define NKEYS 10000

static uint64_t key_of(unsigned i)
{
	char key[32];
	snprintf(key, sizeof(key), "obj/%u", i / 8);
	return hrw_block_id("media", key, "\"etag\"", i % 8).lo;
}

static size_t owner(uint64_t key, const uint64_t *ids, const uint64_t *w, size_t n)
{
	size_t order[16];
	hrw_order(key, ids, w, n, order);
	return order[0];
}

static void test_block_id(void **state)
{
	(void)state;
	struct block_id a = hrw_block_id("b", "k", "e", 0);
	struct block_id b = hrw_block_id("b", "k", "e", 0);
	assert_true(a.lo == b.lo && a.hi == b.hi);
	/* Every part counts, and the NULs keep fields apart. */
	struct block_id others[] = {
	    hrw_block_id("b", "k", "e", 1), hrw_block_id("b", "k", "e", 1ull << 32),
	    hrw_block_id("c", "k", "e", 0), hrw_block_id("b", "K", "e", 0),
	    hrw_block_id("b", "k", "f", 0), hrw_block_id("bk", "", "e", 0),
	    hrw_block_id("", "bk", "e", 0), hrw_block_id("b", "ke", "", 0),
	};
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		assert_false(others[i].lo == a.lo && others[i].hi == a.hi);
		for (size_t j = 0; j < i; j++)
			assert_false(others[i].lo == others[j].lo && others[i].hi == others[j].hi);
	}
	assert_int_equal(hrw_node_id("10.0.0.1:7400"), hrw_node_id("10.0.0.1:7400"));
	assert_int_not_equal(hrw_node_id("10.0.0.1:7400"), hrw_node_id("10.0.0.2:7400"));
}

static void test_score(void **state)
{
	(void)state;
	uint64_t node = hrw_node_id("n1");
	for (unsigned i = 0; i < 1000; i++) {
		uint64_t k = key_of(i);
		assert_true(hrw_score(k, node, 0) == 0.0);
		double s1 = hrw_score(k, node, 1);
		assert_true(s1 > 0.0 && s1 < 1e30);
		assert_true(hrw_score(k, node, 1) == s1);
		/* -w/ln(u): linear in the weight for the same (key, node). */
		double s3 = hrw_score(k, node, 3);
		assert_true(s3 > 2.999999 * s1 && s3 < 3.000001 * s1);
	}
	/* Extreme hashes stay finite and positive. */
	assert_true(hrw_score(0, 0, 1) > 0.0);
	assert_true(hrw_score(UINT64_MAX, UINT64_MAX, UINT64_MAX) > 0.0);
}

static void test_order_permutation(void **state)
{
	(void)state;
	enum { N = 9 };
	uint64_t ids[N], w[N] = {3, 0, 1, 0, 2, 7, 1, 0, 5};
	for (size_t i = 0; i < N; i++) {
		char addr[32];
		snprintf(addr, sizeof(addr), "cache-%zu:7400", i);
		ids[i] = hrw_node_id(addr);
	}
	size_t first_counts[N] = {0};
	for (unsigned k = 0; k < 2000; k++) {
		uint64_t key = key_of(k);
		size_t a[N], b[N];
		memset(a, 0xff, sizeof(a));
		hrw_order(key, ids, w, N, a);
		hrw_order(key, ids, w, N, b);
		assert_memory_equal(a, b, sizeof(a));
		bool seen[N] = {false};
		for (size_t i = 0; i < N; i++) {
			assert_true(a[i] < N);
			assert_false(seen[a[i]]);
			seen[a[i]] = true;
		}
		/* best first */
		for (size_t i = 1; i < N; i++)
			assert_true(hrw_score(key, ids[a[i - 1]], w[a[i - 1]]) >=
			            hrw_score(key, ids[a[i]], w[a[i]]));
		/* weight-0 nodes (1, 3, 7) take the last three places */
		for (size_t i = N - 3; i < N; i++)
			assert_int_equal(w[a[i]], 0);
		first_counts[a[0]]++;
		/* The order does not depend on the order the nodes are listed in. */
		uint64_t rids[N], rw[N];
		for (size_t i = 0; i < N; i++) {
			rids[i] = ids[N - 1 - i];
			rw[i] = w[N - 1 - i];
		}
		size_t r[N];
		hrw_order(key, rids, rw, N, r);
		for (size_t i = 0; i < N; i++)
			assert_int_equal(N - 1 - r[i], a[i]);
	}
	assert_int_equal(first_counts[1] + first_counts[3] + first_counts[7], 0);
	/* All weight 0: still a permutation. */
	uint64_t zero[3] = {0, 0, 0};
	size_t o[3];
	hrw_order(1, ids, zero, 3, o);
	assert_int_equal(o[0] + o[1] + o[2], 3);
	assert_true(o[0] != o[1] && o[1] != o[2] && o[0] != o[2]);
	/* One node, and none. */
	hrw_order(1, ids, w, 1, o);
	assert_int_equal(o[0], 0);
	hrw_order(1, ids, w, 0, o);
}

static void test_add_node(void **state)
{
	(void)state;
	uint64_t ids[4] = {hrw_node_id("10.1.0.1:7400"), hrw_node_id("10.1.0.2:7400"),
	                   hrw_node_id("10.1.0.3:7400"), hrw_node_id("10.1.0.4:7400")};
	uint64_t w[4] = {100, 100, 100, 100};
	unsigned moved = 0, per3[3] = {0};
	for (unsigned k = 0; k < NKEYS; k++) {
		uint64_t key = key_of(k);
		size_t before = owner(key, ids, w, 3);
		size_t after = owner(key, ids, w, 4);
		per3[before]++;
		if (after != before) {
			assert_int_equal(after, 3); /* only to the new node */
			moved++;
		}
	}
	print_message("adding a 4th node moved %u of %u keys\n", moved, NKEYS);
	assert_true(moved >= NKEYS * 20 / 100 && moved <= NKEYS * 30 / 100);
	for (int i = 0; i < 3; i++)
		assert_true(per3[i] > NKEYS * 30 / 100 && per3[i] < NKEYS * 37 / 100);
}

static void test_remove_node(void **state)
{
	(void)state;
	uint64_t ids[4] = {hrw_node_id("a:1"), hrw_node_id("b:1"), hrw_node_id("c:1"),
	                   hrw_node_id("d:1")};
	uint64_t w[4] = {1, 1, 1, 1};
	/* Without node 1: the others, in their order. */
	uint64_t ids3[3] = {ids[0], ids[2], ids[3]};
	uint64_t w3[3] = {1, 1, 1};
	static const size_t map3[3] = {0, 2, 3};
	unsigned held = 0;
	for (unsigned k = 0; k < NKEYS; k++) {
		uint64_t key = key_of(k);
		size_t order[4];
		hrw_order(key, ids, w, 4, order);
		size_t after = map3[owner(key, ids3, w3, 3)];
		if (order[0] == 1) {
			held++;
			/* its keys go to their second choice */
			assert_int_equal(after, order[1]);
		} else {
			assert_int_equal(after, order[0]); /* nobody else's move */
		}
	}
	assert_true(held > NKEYS * 20 / 100 && held < NKEYS * 30 / 100);

	/* Weight 0 is as good as gone: the same owners as without it. */
	uint64_t w0[4] = {1, 0, 1, 1};
	for (unsigned k = 0; k < NKEYS; k++) {
		uint64_t key = key_of(k);
		assert_int_equal(owner(key, ids, w0, 4), map3[owner(key, ids3, w3, 3)]);
	}
}

static void test_weights(void **state)
{
	(void)state;
	uint64_t ids[2] = {hrw_node_id("big:7400"), hrw_node_id("small:7400")};
	uint64_t w[2] = {2, 1};
	unsigned count[2] = {0};
	for (unsigned k = 0; k < NKEYS; k++)
		count[owner(key_of(k), ids, w, 2)]++;
	double ratio = (double)count[0] / count[1];
	print_message("weights 2:1 -> %u:%u (%.3f)\n", count[0], count[1], ratio);
	assert_true(ratio > 1.8 && ratio < 2.2);

	/* The same with the weights scaled, and 4 nodes 4:2:1:1. */
	uint64_t w_scaled[2] = {2000, 1000};
	for (unsigned k = 0; k < 1000; k++)
		assert_int_equal(owner(key_of(k), ids, w, 2), owner(key_of(k), ids, w_scaled, 2));
	uint64_t ids4[4] = {hrw_node_id("w4"), hrw_node_id("w2"), hrw_node_id("w1a"),
	                    hrw_node_id("w1b")};
	uint64_t w4[4] = {4, 2, 1, 1};
	unsigned c4[4] = {0};
	for (unsigned k = 0; k < NKEYS * 4; k++)
		c4[owner(key_of(k), ids4, w4, 4)]++;
	print_message("weights 4:2:1:1 -> %u:%u:%u:%u\n", c4[0], c4[1], c4[2], c4[3]);
	double unit = (double)(c4[2] + c4[3]) / 2;
	assert_true(c4[0] / unit > 3.6 && c4[0] / unit < 4.4);
	assert_true(c4[1] / unit > 1.8 && c4[1] / unit < 2.2);
	assert_true((double)c4[2] / c4[3] > 0.9 && (double)c4[2] / c4[3] < 1.1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_block_id),          cmocka_unit_test(test_score),
	    cmocka_unit_test(test_order_permutation), cmocka_unit_test(test_add_node),
	    cmocka_unit_test(test_remove_node),       cmocka_unit_test(test_weights),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
