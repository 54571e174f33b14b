/* Group membership of a cache node: every cache.heartbeat_interval it
 * registers with each of its site's mirrors (address, weight, state, block
 * size, usage, hit counts) and takes the member list from the answer, so
 * that it knows the previous owners of the blocks it now owns. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cachenode.h"
#include "log.h"
#include "msg.h"
#include "proto.h"

enum cache_state register_state(struct cachenode *n)
{
	if (atomic_load(&n->weight) == 0)
		return CACHE_DRAINING;
	if (cachenode_now_ns() - n->started_ns < (int64_t)n->cfg->cache_warming_ms * 1000000)
		return CACHE_WARMING;
	return CACHE_ACTIVE;
}

static void describe(struct cachenode *n, struct cache_member *m)
{
	struct blockstore_stats st;
	blockstore_stats(n->store, &st);
	memset(m, 0, sizeof(*m));
	snprintf(m->address, sizeof(m->address), "%s", n->address);
	m->weight = atomic_load(&n->weight);
	m->state = register_state(n);
	m->block_size = n->block_size;
	m->used = st.used;
	m->capacity = st.capacity;
	m->hits = atomic_load(&n->hits);
	m->misses = atomic_load(&n->misses);
}

/* One registration at one mirror. */
static int register_at(struct cachenode *n, struct server_entry *s, struct cache_member *members,
                       size_t *ret_n, mp_error *err)
{
	struct channel *ch;
	bool pooled, sent;
	int r = servers_get_channel(n->client, s, &ch, &pooled, err);
	if (r < 0)
		return r;
	struct cache_member me;
	describe(n, &me);
	struct request_body b;
	request_init(&b, MT_CACHE_REGISTER);
	cacheproto_pack_member_fields(&b.pk, &me);
	b.nfields = CACHEPROTO_MEMBER_FIELDS;
	struct reply rep;
	r = channel_call(ch, &b, NULL, n->client->cfg.timeout_ms, &rep, &sent, err);
	request_destroy(&b);
	if (r < 0) {
		channel_close(ch);
		return r;
	}
	servers_put_channel(s, ch);
	char why[256];
	if (rep.is_error)
		r = client_answer_error(&rep, s->address, err);
	else if (cacheproto_parse_members(rep.frame.body, members, CACHE_MEMBERS_MAX, ret_n, why,
	                                  sizeof(why)) < 0)
		r = mperr(err, -EPROTO, "%s: members: %s", s->address, why);
	reply_release(&rep);
	return r;
}

/* On the event loop: the cluster id the mirrors told the client handle,
 * which HELLOs are checked against from now on. */
static void learn_cluster(evutil_socket_t fd, short what, void *arg)
{
	struct cachenode *n = arg;
	if (n->cluster_id[0] != '\0')
		return;
	pthread_mutex_lock(&n->client->lock);
	snprintf(n->cluster_id, sizeof(n->cluster_id), "%.64s", n->client->cluster_id);
	pthread_mutex_unlock(&n->client->lock);
}

static void register_once(struct cachenode *n, struct cache_member *members)
{
	bool any = false;
	char last[600] = "";
	size_t total = __atomic_load_n(&n->client->servers.n, __ATOMIC_ACQUIRE);
	for (size_t i = 0; i < total; i++) {
		struct server_entry *s = n->client->servers.entries[i];
		if (s->is_primary || !servers_routable(s))
			continue;
		size_t count = 0;
		mp_error err;
		if (register_at(n, s, members, &count, &err) < 0) {
			snprintf(last, sizeof(last), "%s", err.message);
			continue;
		}
		if (!any) {
			cachegroup_set(n->client, &n->own, members, count, n->address);
			event_base_once(n->base, -1, EV_TIMEOUT, learn_cluster, n, NULL);
		}
		any = true;
	}
	pthread_mutex_lock(&n->reg_lock);
	if (!any && (n->registered || n->reg_error[0] == '\0' || strcmp(n->reg_error, last) != 0))
		log_warn("cannot register with the site's mirrors: %s", last);
	else if (any && !n->registered)
		log_info("registered with the site's mirrors as %s", n->address);
	n->registered = any;
	snprintf(n->reg_error, sizeof(n->reg_error), "%s", any ? "" : last);
	pthread_mutex_unlock(&n->reg_lock);
}

static void *registrar_main(void *arg)
{
	struct cachenode *n = arg;
	struct cache_member *members = calloc(CACHE_MEMBERS_MAX, sizeof(*members));
	if (members == NULL)
		return NULL;
	pthread_mutex_lock(&n->reg_lock);
	while (!n->reg_stopping) {
		pthread_mutex_unlock(&n->reg_lock);
		register_once(n, members);
		pthread_mutex_lock(&n->reg_lock);
		if (n->reg_stopping)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t ms = n->cfg->cache_heartbeat_ms;
		ts.tv_sec += (time_t)(ms / 1000);
		ts.tv_nsec += (long)(ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&n->reg_cond, &n->reg_lock, &ts);
	}
	pthread_mutex_unlock(&n->reg_lock);
	free(members);
	return NULL;
}

int register_start(struct cachenode *n)
{
	pthread_mutex_init(&n->reg_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&n->reg_cond, &ca);
	pthread_condattr_destroy(&ca);
	if (n->cfg->mirror.n == 0) {
		log_warn("no mirror configured (--mirror): this node serves only clients that name "
		         "it; the group has no member list");
		return 0;
	}
	if (pthread_create(&n->registrar, NULL, registrar_main, n) != 0)
		return -EAGAIN;
	n->registrar_running = true;
	return 0;
}

/* Wakes the registrar at once (a weight change, a drain). */
void register_now(struct cachenode *n)
{
	pthread_mutex_lock(&n->reg_lock);
	pthread_cond_broadcast(&n->reg_cond);
	pthread_mutex_unlock(&n->reg_lock);
}

void register_stop(struct cachenode *n)
{
	pthread_mutex_lock(&n->reg_lock);
	n->reg_stopping = true;
	pthread_cond_broadcast(&n->reg_cond);
	pthread_mutex_unlock(&n->reg_lock);
	if (n->registrar_running)
		pthread_join(n->registrar, NULL);
	n->registrar_running = false;
	pthread_cond_destroy(&n->reg_cond);
	pthread_mutex_destroy(&n->reg_lock);
}
