/* The servers a client knows (its site's mirrors, then the primaries), a
 * pool of idle connections to each, and their health. A server that refuses,
 * times out or cannot serve the version a read needs is marked down: calls
 * skip it, and a background prober (not the callers) tries it again every
 * probe_interval, so an outage costs a caller at most one timeout. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "netaddr.h"
#include "proto.h"

struct server_entry *servers_entry_new(const char *address, bool is_primary)
{
	struct server_entry *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	snprintf(s->address, sizeof(s->address), "%s", address);
	s->is_primary = is_primary;
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

static int add_list(struct mp_client *c, const struct config_strlist *l, bool is_primary,
                    mp_error *err)
{
	for (size_t i = 0; i < l->n; i++) {
		char host[NETADDR_HOST_MAX];
		uint16_t port;
		const char *a = l->items[i];
		if (strlen(a) >= ADDRESS_MAX || netaddr_split(a, host, sizeof(host), &port) < 0 ||
		    port == 0)
			return mperr(err, -EINVAL, "%s '%s': want HOST:PORT",
			             is_primary ? "primary" : "mirror", a);
		if (c->servers.n == SERVERS_MAX)
			return mperr(err, -E2BIG, "more than %d servers", SERVERS_MAX);
		struct server_entry *s = servers_entry_new(a, is_primary);
		if (s == NULL)
			return mperr(err, -ENOMEM, "out of memory");
		c->servers.entries[c->servers.n++] = s;
	}
	return 0;
}

int servers_init(struct mp_client *c)
{
	struct servers *sv = &c->servers;
	pthread_mutex_init(&sv->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sv->cond, &ca);
	pthread_condattr_destroy(&ca);
	return 0;
}

int servers_add_configured(struct mp_client *c, mp_error *err);
int servers_add_configured(struct mp_client *c, mp_error *err)
{
	int r = add_list(c, &c->cfg.mirror, false, err);
	if (r == 0)
		r = add_list(c, &c->cfg.primary, true, err);
	if (r == 0 && c->cfg.primary.n == 0)
		r = mperr(err, -EINVAL, "no primary configured (option primary)");
	return r;
}

struct server_entry *servers_find_or_add(struct mp_client *c, const char *address)
{
	struct servers *sv = &c->servers;
	pthread_mutex_lock(&sv->lock);
	struct server_entry *found = NULL;
	for (size_t i = 0; i < sv->n && found == NULL; i++)
		if (!sv->entries[i]->is_cache && strcmp(sv->entries[i]->address, address) == 0)
			found = sv->entries[i];
	if (found == NULL && sv->n < SERVERS_MAX) {
		found = servers_entry_new(address, false);
		if (found != NULL) {
			/* Known only to a cache group: not one of the site's mirrors. */
			found->is_aside = true;
			sv->entries[sv->n] = found;
			__atomic_store_n(&sv->n, sv->n + 1, __ATOMIC_RELEASE);
		}
	}
	pthread_mutex_unlock(&sv->lock);
	return found;
}

void servers_destroy(struct mp_client *c)
{
	struct servers *sv = &c->servers;
	pthread_mutex_lock(&sv->lock);
	sv->stopping = true;
	pthread_cond_broadcast(&sv->cond);
	bool running = sv->prober_running;
	pthread_mutex_unlock(&sv->lock);
	if (running)
		pthread_join(sv->prober, NULL);
	for (size_t i = 0; i < sv->n; i++) {
		struct server_entry *s = sv->entries[i];
		for (int k = 0; k < s->nidle; k++)
			channel_close(s->idle[k]);
		pthread_mutex_destroy(&s->lock);
		free(s);
	}
	sv->n = 0;
	pthread_cond_destroy(&sv->cond);
	pthread_mutex_destroy(&sv->lock);
}

static int open_channel(struct mp_client *c, struct server_entry *s, struct channel **ret,
                        mp_error *err)
{
	char cluster[CLUSTER_MAX];
	pthread_mutex_lock(&c->lock);
	snprintf(cluster, sizeof(cluster), "%s", c->cluster_id);
	pthread_mutex_unlock(&c->lock);
	struct channel *ch;
	int r = channel_open(s->address, &c->tls, c->cfg.token, cluster, c->cfg.connect_timeout_ms,
	                     c->cfg.timeout_ms, &ch, err);
	if (r < 0)
		return r;
	client_learn(c, ch);
	*ret = ch;
	return 0;
}

int servers_get_channel(struct mp_client *c, struct server_entry *s, struct channel **ret,
                        bool *ret_pooled, mp_error *err)
{
	for (;;) {
		pthread_mutex_lock(&s->lock);
		struct channel *ch = s->nidle > 0 ? s->idle[--s->nidle] : NULL;
		pthread_mutex_unlock(&s->lock);
		if (ch == NULL)
			break;
		if (channel_alive(ch)) {
			*ret = ch;
			*ret_pooled = true;
			return 0;
		}
		channel_close(ch);
	}
	*ret_pooled = false;
	return open_channel(c, s, ret, err);
}

struct channel *servers_take_pooled(struct server_entry *s)
{
	for (;;) {
		pthread_mutex_lock(&s->lock);
		struct channel *ch = s->nidle > 0 ? s->idle[--s->nidle] : NULL;
		pthread_mutex_unlock(&s->lock);
		if (ch == NULL || channel_alive(ch))
			return ch;
		channel_close(ch);
	}
}

void servers_note_latency(struct server_entry *s, int64_t ns)
{
	pthread_mutex_lock(&s->lock);
	/* A moving average with weight 1/8, like TCP's srtt. */
	s->latency_ns = s->latency_ns == 0 ? ns : s->latency_ns + (ns - s->latency_ns) / 8;
	s->beaten = 0;
	pthread_mutex_unlock(&s->lock);
}

void servers_put_channel(struct server_entry *s, struct channel *ch)
{
	pthread_mutex_lock(&s->lock);
	if (s->nidle < POOL_MAX) {
		s->idle[s->nidle++] = ch;
		ch = NULL;
	}
	pthread_mutex_unlock(&s->lock);
	channel_close(ch);
}

bool servers_is_down(struct server_entry *s)
{
	pthread_mutex_lock(&s->lock);
	bool down = s->down;
	pthread_mutex_unlock(&s->lock);
	return down;
}

/* Asks a down server whether it can serve again. */
static bool probe(struct mp_client *c, struct server_entry *s)
{
	pthread_mutex_lock(&s->lock);
	uint64_t need_version = s->need_version, need_staleness = s->need_staleness_ms;
	pthread_mutex_unlock(&s->lock);
	struct channel *ch;
	mp_error err;
	if (open_channel(c, s, &ch, &err) < 0) {
		pthread_mutex_lock(&s->lock);
		snprintf(s->why_down, sizeof(s->why_down), "%s", err.message);
		pthread_mutex_unlock(&s->lock);
		return false;
	}
	struct request_body b;
	request_init(&b, MT_VERSION);
	struct reply rep;
	bool sent;
	int r = channel_call(ch, &b, NULL, c->cfg.timeout_ms, &rep, &sent, &err);
	request_destroy(&b);
	bool ok = false;
	if (r == 0 && !rep.is_error) {
		int64_t staleness = 0;
		char why[64];
		msg_get_i64(rep.frame.body, "staleness_ms", false, &staleness, why, sizeof(why));
		ok = rep.version >= need_version &&
		     (need_staleness == 0 ||
		      (staleness >= 0 && (uint64_t)staleness <= need_staleness));
	}
	if (r == 0)
		reply_release(&rep);
	if (ok)
		servers_put_channel(s, ch);
	else
		channel_close(ch);
	return ok;
}

static void *prober_main(void *arg)
{
	struct mp_client *c = arg;
	struct servers *sv = &c->servers;
	pthread_mutex_lock(&sv->lock);
	while (!sv->stopping) {
		int64_t now = client_now_ns(), next = INT64_MAX;
		struct server_entry *due = NULL;
		for (size_t i = 0; i < sv->n; i++) {
			struct server_entry *s = sv->entries[i];
			pthread_mutex_lock(&s->lock);
			if (s->down) {
				if (s->next_probe_ns <= now && due == NULL)
					due = s;
				else if (s->next_probe_ns < next)
					next = s->next_probe_ns;
			}
			pthread_mutex_unlock(&s->lock);
		}
		if (due != NULL) {
			pthread_mutex_unlock(&sv->lock);
			bool ok = probe(c, due);
			pthread_mutex_lock(&due->lock);
			if (ok)
				due->down = false;
			else
				due->next_probe_ns =
				    client_now_ns() + (int64_t)c->cfg.probe_interval_ms * 1000000;
			pthread_mutex_unlock(&due->lock);
			pthread_mutex_lock(&sv->lock);
			continue;
		}
		if (next == INT64_MAX) {
			pthread_cond_wait(&sv->cond, &sv->lock);
		} else {
			struct timespec ts = {(time_t)(next / 1000000000),
			                      (long)(next % 1000000000)};
			pthread_cond_timedwait(&sv->cond, &sv->lock, &ts);
		}
	}
	pthread_mutex_unlock(&sv->lock);
	return NULL;
}

void servers_mark_down(struct mp_client *c, struct server_entry *s, uint64_t need_version,
                       uint64_t need_staleness_ms, const char *fmt, ...)
{
	pthread_mutex_lock(&s->lock);
	s->down = true;
	s->need_version = need_version;
	s->need_staleness_ms = need_staleness_ms;
	s->next_probe_ns = client_now_ns() + (int64_t)c->cfg.probe_interval_ms * 1000000;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->why_down, sizeof(s->why_down), fmt, ap);
	va_end(ap);
	/* Idle connections to a server that just failed are suspect. */
	struct channel *drop[POOL_MAX];
	int ndrop = s->nidle;
	memcpy(drop, s->idle, sizeof(drop[0]) * (size_t)ndrop);
	s->nidle = 0;
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < ndrop; i++)
		channel_close(drop[i]);

	struct servers *sv = &c->servers;
	pthread_mutex_lock(&sv->lock);
	if (!sv->prober_running && !sv->stopping &&
	    pthread_create(&sv->prober, NULL, prober_main, c) == 0)
		sv->prober_running = true;
	pthread_cond_broadcast(&sv->cond);
	pthread_mutex_unlock(&sv->lock);
}
