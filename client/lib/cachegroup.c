/* A site's cache group as a client sees it: the members its mirror lists
 * (asked again every cache.refresh), placed by weighted rendezvous hashing,
 * and block reads at the owner, then the next nodes in HRW order. Nodes are
 * server entries like mirrors and primaries: pooled connections, marked
 * down on failure and probed in the background, so a dead node costs one
 * failure per outage and a read never fails while a bucket can serve it.
 *
 * mp-cache uses the same noun for its parent site's group and, while
 * warming, for its own group's previous owners. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hrw.h"
#include "internal.h"
#include "proto.h"

void cachegroup_init(struct cachegroup *g, const struct config_strlist *source)
{
	memset(g, 0, sizeof(*g));
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	g->source = source;
}

void cachegroup_destroy(struct cachegroup *g)
{
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
}

/* The server entry for a member's address, added to the handle's servers
 * (entries are never removed: a member that leaves is just not listed). */
static struct server_entry *node_entry(struct mp_client *c, const char *address)
{
	struct servers *sv = &c->servers;
	pthread_mutex_lock(&sv->lock);
	struct server_entry *found = NULL;
	for (size_t i = 0; i < sv->n && found == NULL; i++)
		if (sv->entries[i]->is_cache && strcmp(sv->entries[i]->address, address) == 0)
			found = sv->entries[i];
	if (found == NULL && sv->n < SERVERS_MAX) {
		found = servers_entry_new(address, false);
		if (found != NULL) {
			found->is_cache = true;
			sv->entries[sv->n] = found;
			/* Readers walk entries[0..n) without the lock. */
			__atomic_store_n(&sv->n, sv->n + 1, __ATOMIC_RELEASE);
		}
	}
	pthread_mutex_unlock(&sv->lock);
	return found;
}

void cachegroup_set(struct mp_client *c, struct cachegroup *g, const struct cache_member *m,
                    size_t n, const char *self)
{
	struct server_entry *nodes[CACHE_MEMBERS_MAX];
	uint64_t ids[CACHE_MEMBERS_MAX], weights[CACHE_MEMBERS_MAX];
	uint64_t block_size = 0;
	size_t k = 0;
	for (size_t i = 0; i < n && k < CACHE_MEMBERS_MAX; i++) {
		if (self != NULL && strcmp(m[i].address, self) == 0)
			continue;
		struct server_entry *s = node_entry(c, m[i].address);
		if (s == NULL)
			continue;
		if (block_size == 0)
			block_size = m[i].block_size;
		else if (m[i].block_size != block_size)
			continue; /* a node of another block size cannot share keys */
		nodes[k] = s;
		ids[k] = hrw_node_id(m[i].address);
		weights[k] = m[i].weight;
		k++;
	}
	pthread_mutex_lock(&g->lock);
	memcpy(g->nodes, nodes, k * sizeof(nodes[0]));
	memcpy(g->ids, ids, k * sizeof(ids[0]));
	memcpy(g->weights, weights, k * sizeof(weights[0]));
	g->n = k;
	g->block_size = block_size;
	g->known = true;
	g->refreshed_ns = client_now_ns();
	pthread_mutex_unlock(&g->lock);
}

/* Asks one server for the members. */
static int ask_members(struct mp_client *c, struct server_entry *s, struct cachegroup *g,
                       mp_error *err)
{
	struct channel *ch;
	bool pooled, sent;
	int r = servers_get_channel(c, s, &ch, &pooled, err);
	if (r < 0)
		return r;
	struct request_body b;
	request_init(&b, MT_CACHE_MEMBERS);
	struct reply rep;
	r = channel_call(ch, &b, NULL, c->cfg.timeout_ms, &rep, &sent, err);
	request_destroy(&b);
	if (r < 0) {
		channel_close(ch);
		return r;
	}
	servers_put_channel(s, ch);
	if (rep.is_error) {
		r = client_answer_error(&rep, s->address, err);
		reply_release(&rep);
		return r;
	}
	struct cache_member *m = calloc(CACHE_MEMBERS_MAX, sizeof(*m));
	size_t n = 0;
	char why[256];
	if (m == NULL)
		r = mperr(err, -ENOMEM, "out of memory");
	else if (cacheproto_parse_members(rep.frame.body, m, CACHE_MEMBERS_MAX, &n, why,
	                                  sizeof(why)) < 0)
		r = mperr(err, -EPROTO, "%s: cache members: %s", s->address, why);
	else
		cachegroup_set(c, g, m, n, g->self);
	free(m);
	reply_release(&rep);
	return r;
}

/* Servers that can say who the members are: the group's own source list,
 * or the handle's mirrors. */
static void refresh(struct mp_client *c, struct cachegroup *g)
{
	mp_error err;
	if (g->source != NULL) {
		for (size_t i = 0; i < g->source->n; i++) {
			struct server_entry *s = servers_find_or_add(c, g->source->items[i]);
			if (s != NULL && !servers_is_down(s) && ask_members(c, s, g, &err) == 0)
				return;
		}
	} else {
		size_t n = __atomic_load_n(&c->servers.n, __ATOMIC_ACQUIRE);
		for (size_t i = 0; i < n; i++) {
			struct server_entry *s = c->servers.entries[i];
			if (s->is_primary || s->is_cache || servers_is_down(s))
				continue;
			if (ask_members(c, s, g, &err) == 0)
				return;
		}
	}
	/* Nobody said: keep what we had and ask again later. */
	pthread_mutex_lock(&g->lock);
	g->refreshed_ns = client_now_ns();
	pthread_mutex_unlock(&g->lock);
}

uint64_t cachegroup_block_size(struct mp_client *c, struct cachegroup *g)
{
	if (!c->cfg.cache_enabled)
		return 0;
	pthread_mutex_lock(&g->lock);
	if (!g->known) {
		/* The first read of the handle waits for the list (one ask,
		 * bounded by the timeout); readers in parallel wait with it
		 * rather than going around the group. */
		while (g->refreshing)
			pthread_cond_wait(&g->cond, &g->lock);
		if (!g->known) {
			g->refreshing = true;
			pthread_mutex_unlock(&g->lock);
			refresh(c, g);
			pthread_mutex_lock(&g->lock);
			g->refreshing = false;
			g->known = true;
			pthread_cond_broadcast(&g->cond);
		}
	} else if (!g->refreshing && client_now_ns() - g->refreshed_ns >
	                                 (int64_t)c->cfg.members_refresh_ms * 1000000) {
		g->refreshing = true;
		pthread_mutex_unlock(&g->lock);
		refresh(c, g);
		pthread_mutex_lock(&g->lock);
		g->refreshing = false;
		pthread_cond_broadcast(&g->cond);
	}
	uint64_t bs = g->n > 0 ? g->block_size : 0;
	pthread_mutex_unlock(&g->lock);
	return bs;
}

/* The bytes of a BLOCK_READ answer, handed to sink (straight from the
 * answer's buffer: no copy). */
static int take_block(const struct server_entry *s, struct reply *rep,
                      const struct block_request *req, mp_sink_cb sink, void *arg, char *ret_source,
                      mp_error *err)
{
	if (rep->is_error)
		return client_answer_error(rep, s->address, err);
	const char *data, *src;
	size_t len = 0, srclen;
	char why[200];
	if (msg_get_bytes(rep->frame.body, "data", true, 0, CACHE_BLOCK_MAX, &data, &len, why,
	                  sizeof(why)) != 0 ||
	    len != req->length)
		return mperr(err, -EPROTO, "%s: block read answered %s", s->address,
		             len != req->length ? "the wrong number of bytes" : why);
	if (msg_get_bytes(rep->frame.body, "source", false, 1, 15, &src, &srclen, why,
	                  sizeof(why)) == 0)
		snprintf(ret_source, 16, "%.*s", (int)srclen, src);
	int r = sink(arg, data, len);
	if (r < 0)
		return mperr(err, r, "%s", strerror(-r));
	return 0;
}

int cachegroup_read(struct mp_client *c, struct cachegroup *g, const struct block_request *req,
                    size_t max_nodes, mp_sink_cb sink, void *arg, mp_call *call, mp_error *err)
{
	struct server_entry *nodes[CACHE_MEMBERS_MAX];
	uint64_t ids[CACHE_MEMBERS_MAX], weights[CACHE_MEMBERS_MAX];
	size_t order[CACHE_MEMBERS_MAX];
	pthread_mutex_lock(&g->lock);
	size_t n = g->n;
	uint64_t bs = g->block_size;
	memcpy(nodes, g->nodes, n * sizeof(nodes[0]));
	memcpy(ids, g->ids, n * sizeof(ids[0]));
	memcpy(weights, g->weights, n * sizeof(weights[0]));
	pthread_mutex_unlock(&g->lock);
	if (n == 0 || bs == 0)
		return mperr(err, -ENODATA, "no cache group");
	struct block_id id = hrw_block_id(req->bucket, req->key, req->etag, req->offset / bs);
	hrw_order(id.lo, ids, weights, n, order);
	mp_error last = {0};
	last.code = -ENODATA;
	snprintf(last.message, sizeof(last.message), "no cache node could serve");
	struct request_body b;
	request_init(&b, MT_BLOCK_READ);
	b.nfields = cacheproto_pack_block_fields(&b.pk, req);
	bool skip[CACHE_MEMBERS_MAX] = {0};
	size_t tried = 0;
	int r = -ENODATA;
	for (size_t i = 0; i < n && tried < max_nodes && r != 0; i++) {
		struct server_entry *s = nodes[order[i]];
		if (skip[i] || (weights[order[i]] == 0 && i > 0))
			continue; /* draining nodes only as owners of last resort */
		if (servers_is_down(s))
			continue;
		tried++;
		/* The next node in HRW order is this read's hedge. */
		struct server_entry *backup = NULL;
		size_t bi = 0;
		for (size_t j = i + 1; backup == NULL && tried < max_nodes && j < n; j++)
			if (!skip[j] && weights[order[j]] > 0 &&
			    !servers_is_down(nodes[order[j]])) {
				backup = nodes[order[j]];
				bi = j;
			}
		struct server_entry *served;
		struct reply rep;
		enum attempt a = route_hedged(c, s, NULL, backup, NULL, &b,
		                              g->timeout_ms ? g->timeout_ms : c->cfg.timeout_ms,
		                              &rep, &served, &last);
		if (served != s) {
			skip[bi] = true;
			tried++;
		}
		if (a != ATTEMPT_ANSWERED) {
			servers_mark_down(c, served, 0, 0, "%s", last.message);
			continue;
		}
		char source[16] = "";
		r = take_block(served, &rep, req, sink, arg, source, &last);
		reply_release(&rep);
		if (r < 0 && !rep.is_error && r != -EPROTO) {
			request_destroy(&b);
			*err = last; /* the sink failed: not the node's fault */
			return r == -ENODATA ? -EIO : r;
		}
		if (r == 0) {
			if (call != NULL)
				snprintf(call->served_by, sizeof(call->served_by), "cache %s (%s)",
				         served->address, source);
			break;
		}
		/* A node that answers (a peer read of a block it lacks, a
		 * refusal, a source that failed it) is not broken; one that
		 * garbles its answer is. */
		if (r == -EPROTO)
			servers_mark_down(c, served, 0, 0, "%s", last.message);
		r = -ENODATA;
	}
	request_destroy(&b);
	if (r == 0)
		return 0;
	return mperr(err, last.code == -EACCES ? -EACCES : -ENODATA, "%s", last.message);
}

int cachegroup_read_draining(struct mp_client *c, struct cachegroup *g,
                             const struct block_request *req, mp_sink_cb sink, void *arg)
{
	struct server_entry *nodes[CACHE_MEMBERS_MAX];
	size_t n = 0;
	pthread_mutex_lock(&g->lock);
	for (size_t i = 0; i < g->n; i++)
		if (g->weights[i] == 0)
			nodes[n++] = g->nodes[i];
	pthread_mutex_unlock(&g->lock);
	if (n == 0)
		return -ENODATA;
	struct block_request peer = *req;
	peer.peer = true;
	struct request_body b;
	request_init(&b, MT_BLOCK_READ);
	b.nfields = cacheproto_pack_block_fields(&b.pk, &peer);
	int r = -ENODATA;
	for (size_t i = 0; i < n && r != 0; i++) {
		if (servers_is_down(nodes[i]))
			continue;
		struct reply rep;
		mp_error err;
		if (route_once(c, nodes[i], &b, NULL, c->cfg.timeout_ms, &rep, &err) !=
		    ATTEMPT_ANSWERED)
			continue;
		char source[16];
		r = take_block(nodes[i], &rep, &peer, sink, arg, source, &err) == 0 ? 0 : -ENODATA;
		reply_release(&rep);
	}
	request_destroy(&b);
	return r;
}

struct members_out {
	struct cache_member *m;
	mp_cache_node *out;
	size_t cap, *ret_n;
};

static int take_members(void *arg, const char *address, const struct reply *rep, mp_error *err)
{
	struct members_out *mo = arg;
	size_t n = 0;
	char why[256];
	if (rep->is_error)
		return client_answer_error(rep, address, err);
	if (cacheproto_parse_members(rep->frame.body, mo->m, CACHE_MEMBERS_MAX, &n, why,
	                             sizeof(why)) < 0)
		return mperr(err, -EPROTO, "%s: cache members: %s", address, why);
	for (size_t k = 0; k < n && k < mo->cap; k++) {
		const struct cache_member *x = &mo->m[k];
		mp_cache_node *o = &mo->out[k];
		memset(o, 0, sizeof(*o));
		snprintf(o->address, sizeof(o->address), "%s", x->address);
		snprintf(o->state, sizeof(o->state), "%s", cacheproto_state_name(x->state));
		o->weight = x->weight;
		o->used = x->used;
		o->capacity = x->capacity;
		o->hits = x->hits;
		o->misses = x->misses;
		o->block_size = x->block_size;
		o->age_ms = x->age_ms;
	}
	*mo->ret_n = n;
	return 0;
}

MP_EXPORT int mp_cache_status(mp_client *c, mp_cache_node *out, size_t cap, size_t *ret_n,
                              mp_error *err)
{
	struct members_out mo = {
	    .m = calloc(CACHE_MEMBERS_MAX, sizeof(*mo.m)), .out = out, .cap = cap, .ret_n = ret_n};
	if (mo.m == NULL)
		return mperr(err, -ENOMEM, "out of memory");
	struct request_body b;
	request_init(&b, MT_CACHE_MEMBERS);
	int r =
	    route_first_mirror(c, &b, take_members, &mo,
	                       "no mirror configured: the cache group is known to mirrors", err);
	request_destroy(&b);
	free(mo.m);
	return r;
}

int cachegroup_buf_sink(void *arg, const void *data, size_t len)
{
	struct cachegroup_buf *b = arg;
	if (len > b->cap - b->len)
		return -EOVERFLOW;
	memcpy(b->p + b->len, data, len);
	b->len += len;
	return 0;
}
