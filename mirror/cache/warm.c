/* Warming at a cache node: CACHE_WARM fills the listed blocks this node
 * owns through the same single flight as readers' misses (a block already
 * here is not fetched again, one a reader is filling is joined), and
 * answers once every one is stored or failed; CACHE_HAS says which are
 * here (no I/O, no hit counted, so a readiness probe does not disturb
 * eviction); CACHE_EVICT drops them (a previous version's blocks). The
 * site's mirror decides what to warm and sends each node its share; no
 * data passes through the mirror. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cachenode.h"
#include "grant.h"
#include "hrw.h"
#include "log.h"
#include "msg.h"

/* One CACHE_WARM in progress; lives on its connection's loop. */
struct warm_batch {
	struct cachenode *node;
	struct conn *c; /* referenced */
	uint64_t id;
	size_t n, pending;
	int results[CACHE_LIST_MAX];
	char error[600];
};

static void send_results(struct conn *c, uint64_t id, const int *results, size_t n,
                         const char *error)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_REPLY, id, error[0] != '\0' ? 3 : 2);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, 0);
	msg_pack_key(&pk, "results");
	msgpack_pack_array(&pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		msgpack_pack_int(&pk, results[i]);
	if (error[0] != '\0') {
		msg_pack_key(&pk, "error");
		msg_pack_cstr(&pk, error);
	}
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

static void batch_release(struct warm_batch *b)
{
	if (--b->pending > 0)
		return;
	if (conn_alive(b->c))
		send_results(b->c, b->id, b->results, b->n, b->error);
	conn_unref(b->c);
	free(b);
}

struct warm_item {
	struct warm_batch *batch;
	size_t index;
};

static void warm_done(void *arg, int result, const char *why)
{
	struct warm_item *it = arg;
	struct warm_batch *b = it->batch;
	struct cachenode *n = b->node;
	b->results[it->index] = result;
	metric_add(metric_child(n->m_warm_blocks, result == 0   ? "cached"
	                                          : result == 1 ? "filled"
	                                                        : "failed"),
	           1);
	if (result < 0 && b->error[0] == '\0')
		snprintf(b->error, sizeof(b->error), "block %zu: %s", it->index, why);
	free(it);
	batch_release(b);
}

/* With a cluster secret every block needs its grant (the mirror signs
 * them): a node does not fetch on anybody's say-so. */
static int check_grants(struct cachenode *n, const struct block_request *reqs, size_t count,
                        char *why, size_t whylen)
{
	if (n->secret == NULL)
		return 0;
	for (size_t i = 0; i < count; i++) {
		char err[200];
		if (grant_check(n->secret, n->secret_len, reqs[i].bucket, reqs[i].key, reqs[i].etag,
		                reqs[i].grant, reqs[i].grant_len, (int64_t)time(NULL), err,
		                sizeof(err)) < 0) {
			snprintf(why, whylen, "blocks[%zu] (%s/%s): %s", i, reqs[i].bucket,
			         reqs[i].key, err);
			return -EACCES;
		}
	}
	return 0;
}

void warm_dispatch(struct serve_loop *l, struct conn *c, struct request *r)
{
	struct cachenode *n = l->node;
	const char *what = proto_msg_name(r->frame.type);
	struct block_request *reqs = calloc(CACHE_LIST_MAX, sizeof(*reqs));
	if (reqs == NULL) {
		conn_send_error(c, r->id, -ENOMEM, "out of memory");
		return;
	}
	size_t count = 0;
	char why[700];
	int rc = cacheproto_parse_block_list(r->frame.body, n->block_size, reqs, CACHE_LIST_MAX,
	                                     &count, why, sizeof(why));
	if (rc == 0)
		rc = check_grants(n, reqs, count, why, sizeof(why));
	if (rc < 0) {
		metric_add(rc == -EACCES ? n->m_denied : n->m_errors, 1);
		conn_send_error(c, r->id, rc, "%s: %s", what, why);
		free(reqs);
		return;
	}
	int results[CACHE_LIST_MAX];
	if (r->frame.type == MT_CACHE_HAS || r->frame.type == MT_CACHE_EVICT) {
		for (size_t i = 0; i < count; i++) {
			const struct block_request *q = &reqs[i];
			struct block_id bid =
			    hrw_block_id(q->bucket, q->key, q->etag, q->offset / n->block_size);
			results[i] = blockstore_has(n->store, bid) ? 0 : -ENOENT;
			if (r->frame.type == MT_CACHE_EVICT && results[i] == 0) {
				blockstore_drop(n->store, bid);
				metric_add(n->m_warm_evicted, 1);
			}
		}
		send_results(c, r->id, results, count, "");
		free(reqs);
		return;
	}
	struct warm_batch *b = calloc(1, sizeof(*b));
	if (b == NULL) {
		conn_send_error(c, r->id, -ENOMEM, "out of memory");
		free(reqs);
		return;
	}
	b->node = n;
	b->c = c;
	conn_ref(c);
	b->id = r->id;
	b->n = count;
	b->pending = count + 1; /* held until every fill is asked for */
	for (size_t i = 0; i < count; i++) {
		const struct block_request *q = &reqs[i];
		struct block_id bid =
		    hrw_block_id(q->bucket, q->key, q->etag, q->offset / n->block_size);
		if (blockstore_has(n->store, bid)) {
			b->results[i] = 0;
			metric_add(metric_child(n->m_warm_blocks, "cached"), 1);
			b->pending--;
			continue;
		}
		struct warm_item *it = malloc(sizeof(*it));
		if (it == NULL) {
			b->results[i] = -ENOMEM;
			b->pending--;
			continue;
		}
		it->batch = b;
		it->index = i;
		fill_warm(n, l->base, q, bid, warm_done, it);
	}
	free(reqs);
	batch_release(b);
}
