/* Large reusable buffers (common/base/bigbuf.c): a buffer given back is handed
 * out again for a size it fits, never for one more than twice smaller;
 * small sizes still work; the idle total stays under its limit; buffers
 * shared by threads come back intact. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bigbuf.h"

static void test_reuse(void **state)
{
	(void)state;
	char *a = bigbuf_get(4u << 20);
	assert_non_null(a);
	memset(a, 0x5a, 4u << 20);
	bigbuf_put(a);
	/* A little smaller fits the same buffer; its pages are still in. */
	char *b = bigbuf_get((4u << 20) - 100);
	assert_ptr_equal(a, b);
	assert_int_equal((unsigned char)b[12345], 0x5a);
	/* Too small for it: a new one, not the 4 MiB buffer. */
	bigbuf_put(b);
	char *c = bigbuf_get(1u << 20);
	assert_ptr_not_equal(c, a);
	memset(c, 1, 1u << 20);
	char *d = bigbuf_get(4u << 20);
	assert_ptr_equal(d, a);
	bigbuf_put(c);
	bigbuf_put(d);
	/* Below BIGBUF_MIN it is still a usable buffer. */
	char *e = bigbuf_get(10);
	assert_non_null(e);
	memset(e, 0, 10);
	bigbuf_put(e);
	bigbuf_put(NULL);
}

static void test_idle_limit(void **state)
{
	(void)state;
	enum { N = 64 };
	void *bufs[N];
	for (int i = 0; i < N; i++) {
		bufs[i] = bigbuf_get(4u << 20);
		assert_non_null(bufs[i]);
		memset(bufs[i], i, 4096);
	}
	for (int i = 0; i < N; i++)
		bigbuf_put(bufs[i]);
	/* At most the limit's worth is kept; the rest went back to malloc. */
	size_t idle = bigbuf_idle_total();
	assert_true(idle <= BIGBUF_KEEP_BYTES);
	assert_true(idle >= BIGBUF_KEEP_BYTES - (5u << 20));
	/* Taking them again takes every 4 MiB buffer (smaller ones of the
	 * test before may stay). */
	void *again[N];
	for (int i = 0; i < N; i++)
		assert_non_null(again[i] = bigbuf_get(4u << 20));
	assert_true(bigbuf_idle_total() < (4u << 20));
	for (int i = 0; i < N; i++)
		bigbuf_put(again[i]);
}

static void *worker(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	for (int i = 0; i < 200; i++) {
		size_t len = (256u << 10) + (size_t)(rand_r(&seed) % (6u << 20));
		unsigned char *p = bigbuf_get(len);
		if (p == NULL)
			return (void *)1;
		memset(p, (int)seed & 0xff, len);
		for (size_t k = 0; k < len; k += 4093)
			if (p[k] != (seed & 0xff))
				return (void *)1;
		bigbuf_put(p);
	}
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	pthread_t t[4];
	for (uintptr_t i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)(i + 1)), 0);
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(t[i], &r);
		assert_null(r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reuse),
	    cmocka_unit_test(test_idle_limit),
	    cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
