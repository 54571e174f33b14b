/* Large buffers kept for reuse (see bigbuf.h). */
#include "bigbuf.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

/* Each buffer starts with its header; callers get the bytes after it. */
struct bigbuf {
	size_t cap;
	struct bigbuf *next; /* while idle */
	max_align_t align[];
};

static pthread_mutex_t bigbuf_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bigbuf *bigbuf_idle;
static size_t bigbuf_idle_bytes;

void *bigbuf_get(size_t len)
{
	if (len < BIGBUF_MIN)
		len = BIGBUF_MIN;
	pthread_mutex_lock(&bigbuf_lock);
	/* The smallest idle buffer that fits, if it is not more than twice
	 * too big. */
	struct bigbuf **best = NULL;
	for (struct bigbuf **p = &bigbuf_idle; *p != NULL; p = &(*p)->next)
		if ((*p)->cap >= len && (*p)->cap / 2 <= len &&
		    (best == NULL || (*p)->cap < (*best)->cap))
			best = p;
	struct bigbuf *b = NULL;
	if (best != NULL) {
		b = *best;
		*best = b->next;
		bigbuf_idle_bytes -= b->cap;
	}
	pthread_mutex_unlock(&bigbuf_lock);
	if (b == NULL) {
		/* Rounded up to 64 KiB, so near sizes share buffers. */
		size_t cap = (len + 0xFFFF) & ~(size_t)0xFFFF;
		b = malloc(sizeof(*b) + cap);
		if (b == NULL)
			return NULL;
		b->cap = cap;
	}
	b->next = NULL;
	return b->align;
}

void bigbuf_put(void *p)
{
	if (p == NULL)
		return;
	struct bigbuf *b = (struct bigbuf *)((char *)p - offsetof(struct bigbuf, align));
	pthread_mutex_lock(&bigbuf_lock);
	/* Over the limit, the largest idle buffers go first. */
	while (bigbuf_idle_bytes + b->cap > BIGBUF_KEEP_BYTES && bigbuf_idle != NULL) {
		struct bigbuf **big = &bigbuf_idle;
		for (struct bigbuf **q = &bigbuf_idle; *q != NULL; q = &(*q)->next)
			if ((*q)->cap > (*big)->cap)
				big = q;
		if ((*big)->cap < b->cap)
			break;
		struct bigbuf *x = *big;
		*big = x->next;
		bigbuf_idle_bytes -= x->cap;
		free(x);
	}
	if (bigbuf_idle_bytes + b->cap <= BIGBUF_KEEP_BYTES) {
		b->next = bigbuf_idle;
		bigbuf_idle = b;
		bigbuf_idle_bytes += b->cap;
		b = NULL;
	}
	pthread_mutex_unlock(&bigbuf_lock);
	free(b);
}

size_t bigbuf_idle_total(void)
{
	pthread_mutex_lock(&bigbuf_lock);
	size_t n = bigbuf_idle_bytes;
	pthread_mutex_unlock(&bigbuf_lock);
	return n;
}

/* Idle buffers go at exit, so leak checkers see none. */
__attribute__((destructor)) static void bigbuf_release_all(void)
{
	pthread_mutex_lock(&bigbuf_lock);
	while (bigbuf_idle != NULL) {
		struct bigbuf *b = bigbuf_idle;
		bigbuf_idle = b->next;
		free(b);
	}
	bigbuf_idle_bytes = 0;
	pthread_mutex_unlock(&bigbuf_lock);
}
