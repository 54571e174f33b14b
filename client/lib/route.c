/* Routing: which server a request goes to, and what happens when one does
 * not answer. Reads go to the site's mirrors in order with the call's
 * consistency, then the primaries; writes to the first primary that
 * answers; cache-group block reads to the block's owner, then the next
 * nodes. A server that refuses, times out or cannot serve is marked down
 * (servers.c probes it back). Reads are hedged: when a server has not
 * answered within a delay learnt from its own latencies (bounded by
 * hedge_max; hedge_delay before any are known), the same read also goes to
 * the next server and the first answer wins, so a hung server costs the
 * hedge delay, not the timeout, even to a process that has no connection to
 * it yet. Writes are never hedged: they are not idempotent. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"
#include "proto.h"

static void note_server(mp_call *call, const struct server_entry *s)
{
	if (call != NULL)
		snprintf(call->served_by, sizeof(call->served_by), "%s %s",
		         s->is_primary ? "primary" : "mirror", s->address);
}

/* An answer that sends the client on to the next server: a draining one. */
static bool passed_on(struct reply *ret, const struct server_entry *s, mp_error *last)
{
	if (!ret->is_error || ret->error_code != -ESHUTDOWN)
		return false;
	client_answer_error(ret, s->address, last);
	reply_release(ret);
	return true;
}

static void answered(struct mp_client *c, mp_call *call, const struct server_entry *s,
                     const struct reply *ret, bool bump_session, unsigned fallbacks)
{
	if (bump_session)
		client_session_bump(c, ret->version);
	note_server(call, s);
	if (call != NULL) {
		call->version = ret->version;
		call->fallbacks += fallbacks;
	}
}

static int unanswered(mp_call *call, unsigned fallbacks, const mp_error *last, const char *what,
                      mp_error *err)
{
	if (call != NULL)
		call->fallbacks += fallbacks;
	return mperr(err, last->code ? last->code : -EHOSTUNREACH, "%s: %s", what, last->message);
}

/* One request at one server, with one retry on a fresh connection when a
 * pooled one turns out dead before the request reached the server (a
 * restarted server). */
enum attempt route_once(struct mp_client *c, struct server_entry *s, const struct request_body *b,
                        const struct read_fields *rf, uint64_t timeout_ms, struct reply *ret,
                        mp_error *err)
{
	for (int tries = 0; tries < 2; tries++) {
		struct channel *ch;
		bool pooled, sent;
		if (servers_get_channel(c, s, &ch, &pooled, err) < 0)
			return ATTEMPT_FAILED;
		int64_t start = client_now_ns();
		int r = channel_call(ch, b, rf, timeout_ms, ret, &sent, err);
		if (r == 0) {
			servers_note_latency(s, client_now_ns() - start);
			servers_put_channel(s, ch);
			return ATTEMPT_ANSWERED;
		}
		channel_close(ch);
		if (r == -ETIMEDOUT)
			return sent ? ATTEMPT_UNKNOWN : ATTEMPT_FAILED;
		/* A pooled connection the server had already closed: the request
		 * was refused by the socket, or read back as a reset. */
		if (pooled && (r == -EPIPE || r == -ECONNRESET))
			continue;
		return sent ? ATTEMPT_UNKNOWN : ATTEMPT_FAILED;
	}
	return ATTEMPT_FAILED;
}

static int strong_version(struct mp_client *c, mp_call *call, uint64_t *ret, mp_error *err)
{
	struct request_body b;
	request_init(&b, MT_VERSION);
	struct reply rep;
	mp_call sub = {0};
	int r = client_primary(c, &b, &sub, &rep, err);
	request_destroy(&b);
	if (r < 0)
		return r;
	*ret = rep.version;
	reply_release(&rep);
	if (call != NULL)
		call->fallbacks += sub.fallbacks;
	return 0;
}

/* A handle with a session file must know its cluster (to read the file)
 * before its first read picks a min_version. */
static void ensure_session(struct mp_client *c)
{
	if (c->cfg.session_file == NULL)
		return;
	pthread_mutex_lock(&c->lock);
	bool known = c->cluster_id[0] != '\0';
	pthread_mutex_unlock(&c->lock);
	if (known)
		return;
	/* A VERSION at the first healthy server, hedged to the next: a
	 * connection brings the cluster id, and a frozen server costs the
	 * hedge delay here too. */
	struct server_entry *list[2] = {NULL, NULL};
	size_t k = 0, n = __atomic_load_n(&c->servers.n, __ATOMIC_ACQUIRE);
	for (size_t i = 0; i < n && k < 2; i++) {
		struct server_entry *s = c->servers.entries[i];
		if (servers_routable(s) && !servers_is_down(s))
			list[k++] = s;
	}
	if (k == 0)
		return;
	struct request_body b;
	request_init(&b, MT_VERSION);
	struct reply rep;
	struct server_entry *served;
	mp_error e;
	enum attempt a =
	    route_hedged(c, list[0], NULL, list[1], NULL, &b, c->cfg.timeout_ms, &rep, &served, &e);
	request_destroy(&b);
	if (a == ATTEMPT_ANSWERED)
		reply_release(&rep);
	else
		servers_mark_down(c, served, 0, 0, "%s", e.message);
}

int client_read(struct mp_client *c, const struct request_body *b, mp_call *call, struct reply *ret,
                mp_error *err)
{
	ensure_session(c);
	enum mp_consistency level = client_level(c, call);
	struct read_fields rf = {0};
	uint64_t timeout = c->cfg.timeout_ms;
	rf.send_deadline = true;
	/* The mirror must answer (or say STALE) well inside our timeout. */
	rf.deadline_ms = c->cfg.read_deadline_ms;
	if (rf.deadline_ms > timeout / 2)
		rf.deadline_ms = timeout / 2;
	if (level == MP_STRONG) {
		int r = strong_version(c, call, &rf.min_version, err);
		if (r < 0)
			return r;
	}
	if (level != MP_EVENTUAL) {
		uint64_t s = atomic_load(&c->session);
		if (s > rf.min_version)
			rf.min_version = s;
	} else {
		rf.max_staleness_ms =
		    call && call->max_staleness_ms ? call->max_staleness_ms : c->max_staleness_ms;
	}
	mp_error last = {0};
	unsigned fallbacks = 0;
	struct servers *sv = &c->servers;
	bool tried[SERVERS_MAX] = {0};
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < sv->n; i++) {
			struct server_entry *s = sv->entries[i];
			/* Pass 0: healthy servers; pass 1: the primaries that were
			 * already marked down, as a last resort. */
			if (tried[i] || (pass == 0 && servers_is_down(s)) ||
			    (pass == 1 && !s->is_primary))
				continue;
			tried[i] = true;
			if (!servers_routable(s))
				continue;
			bool mirror = !s->is_primary;
			if (mirror && level != MP_EVENTUAL) {
				uint64_t sess = atomic_load(&c->session);
				if (sess > rf.min_version)
					rf.min_version = sess;
			}
			/* The next server this read would go to is its hedge. */
			struct server_entry *backup = NULL;
			size_t bj = 0;
			for (size_t j = i + 1; pass == 0 && backup == NULL && j < sv->n; j++) {
				struct server_entry *t = sv->entries[j];
				if (!tried[j] && servers_routable(t) && !servers_is_down(t)) {
					backup = t;
					bj = j;
				}
			}
			struct server_entry *served;
			enum attempt a = route_hedged(c, s, mirror ? &rf : NULL, backup,
			                              backup && !backup->is_primary ? &rf : NULL, b,
			                              timeout, ret, &served, &last);
			if (served != s) {
				tried[bj] = true;
				s = served;
				mirror = !s->is_primary;
			}
			if (a != ATTEMPT_ANSWERED) {
				if (pass == 0 || mirror)
					servers_mark_down(c, s, rf.min_version, rf.max_staleness_ms,
					                  "%s", last.message);
				fallbacks++;
				continue;
			}
			bool cannot_serve =
			    ret->is_error && mirror &&
			    (ret->error_code == -ESTALE || ret->error_code == -EAGAIN);
			if (cannot_serve) {
				servers_mark_down(c, s, rf.min_version, rf.max_staleness_ms, "%.*s",
				                  (int)ret->error_msg_len, ret->error_msg);
				client_answer_error(ret, s->address, &last);
				reply_release(ret);
			}
			if (cannot_serve || passed_on(ret, s, &last)) {
				fallbacks++;
				continue;
			}
			answered(c, call, s, ret, level != MP_EVENTUAL, fallbacks);
			return 0;
		}
	}
	return unanswered(call, fallbacks, &last, "no server answered", err);
}

int client_primary(struct mp_client *c, const struct request_body *b, mp_call *call,
                   struct reply *ret, mp_error *err)
{
	mp_error last = {0};
	unsigned fallbacks = 0;
	struct servers *sv = &c->servers;
	bool tried[SERVERS_MAX] = {0};
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < sv->n; i++) {
			struct server_entry *s = sv->entries[i];
			if (!s->is_primary || tried[i] || (pass == 0 && servers_is_down(s)))
				continue;
			tried[i] = true;
			enum attempt a = route_once(c, s, b, NULL, c->cfg.timeout_ms, ret, &last);
			if (a == ATTEMPT_UNKNOWN && b->type != MT_VERSION)
				/* Not retried elsewhere: the write may have happened. */
				return mperr(err, last.code ? last.code : -EIO,
				             "%s (the write may or may not have been applied)",
				             last.message);
			if (a != ATTEMPT_ANSWERED) {
				servers_mark_down(c, s, 0, 0, "%s", last.message);
				fallbacks++;
				continue;
			}
			if (passed_on(ret, s, &last)) {
				fallbacks++;
				continue;
			}
			answered(c, call, s, ret, true, fallbacks);
			return 0;
		}
	}
	return unanswered(call, fallbacks, &last, "no primary answered", err);
}

/* ---- hedging ---- */

/* How long a read waits at s before it is hedged. */
static int64_t hedge_delay_ns(struct mp_client *c, struct server_entry *s)
{
	pthread_mutex_lock(&s->lock);
	int64_t lat = s->latency_ns;
	pthread_mutex_unlock(&s->lock);
	int64_t max = (int64_t)c->cfg.hedge_max_ms * 1000000;
	/* A cache node's miss is legitimately slow (a fetch from the origin,
	 * queued behind others), and a hedge makes a second node fetch the
	 * same block: cache reads wait cache.hedge_delay, or twice what the
	 * node has been taking, before trying the next node. */
	if (s->is_cache) {
		int64_t floor = (int64_t)c->cfg.cache_hedge_ms * 1000000;
		return 2 * lat > floor ? 2 * lat : floor;
	}
	if (lat == 0)
		return (int64_t)c->cfg.hedge_delay_ms * 1000000;
	/* Well above what s usually takes, so hedges stay rare while s is
	 * healthy; never below 2 ms (a scheduler hiccup is not a fault). */
	int64_t d = 4 * lat + 1000000;
	if (d < 2000000)
		d = 2000000;
	return d < max ? d : max;
}

/* One leg of a race, run on its own thread. */
struct leg {
	struct race *race;
	struct server_entry *s;
	struct read_fields rf;
	bool has_rf;
	bool done;
	enum attempt outcome;
	struct reply rep;
	mp_error err;
};

struct race {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int refs;
	bool finished; /* the caller has its answer or gave up */
	int efd;       /* written when a leg is done */
	struct mp_client *c;
	struct request_body body; /* a copy: legs may outlive the caller */
	uint64_t timeout_ms;
	struct leg legs[2];
};

static void race_unref(struct race *r)
{
	pthread_mutex_lock(&r->lock);
	int left = --r->refs;
	pthread_mutex_unlock(&r->lock);
	if (left > 0)
		return;
	for (int i = 0; i < 2; i++)
		if (r->legs[i].done && r->legs[i].outcome == ATTEMPT_ANSWERED)
			reply_release(&r->legs[i].rep);
	request_destroy(&r->body);
	if (r->efd >= 0)
		close(r->efd);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static void *leg_main(void *arg)
{
	struct leg *l = arg;
	struct race *r = l->race;
	struct mp_client *c = r->c;
	enum attempt a = route_once(c, l->s, &r->body, l->has_rf ? &l->rf : NULL, r->timeout_ms,
	                            &l->rep, &l->err);
	pthread_mutex_lock(&r->lock);
	l->outcome = a;
	l->done = true;
	bool abandoned = r->finished;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (r->efd >= 0) {
		uint64_t one = 1;
		if (write(r->efd, &one, sizeof(one)) < 0) {
			/* The caller polls the socket with a deadline anyway. */
		}
	}
	if (abandoned && a != ATTEMPT_ANSWERED)
		servers_mark_down(c, l->s, l->has_rf ? l->rf.min_version : 0,
		                  l->has_rf ? l->rf.max_staleness_ms : 0, "%s", l->err.message);
	race_unref(r);
	pthread_mutex_lock(&c->legs_lock);
	bool last = --c->legs_running == 0;
	bool orphaned = c->orphaned;
	if (last)
		pthread_cond_broadcast(&c->legs_cond);
	pthread_mutex_unlock(&c->legs_lock);
	if (last && orphaned)
		client_destroy(c); /* mp_client_close left the handle to us */
	return NULL;
}

static struct race *race_new(struct mp_client *c, const struct request_body *b, uint64_t timeout_ms,
                             bool with_efd)
{
	struct race *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cond, &ca);
	pthread_condattr_destroy(&ca);
	r->refs = 1;
	r->efd = with_efd ? eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : -1;
	r->c = c;
	r->timeout_ms = timeout_ms;
	request_init(&r->body, b->type);
	msgpack_sbuffer_write(&r->body.sb, b->sb.data, b->sb.size);
	r->body.nfields = b->nfields;
	return r;
}

static bool leg_start(struct race *r, int i, struct server_entry *s, const struct read_fields *rf)
{
	struct leg *l = &r->legs[i];
	l->race = r;
	l->s = s;
	l->has_rf = rf != NULL;
	if (rf != NULL)
		l->rf = *rf;
	struct mp_client *c = r->c;
	pthread_mutex_lock(&r->lock);
	r->refs++;
	pthread_mutex_unlock(&r->lock);
	pthread_mutex_lock(&c->legs_lock);
	c->legs_running++;
	pthread_mutex_unlock(&c->legs_lock);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t t;
	bool ok = pthread_create(&t, &attr, leg_main, l) == 0;
	pthread_attr_destroy(&attr);
	if (!ok) {
		pthread_mutex_lock(&c->legs_lock);
		c->legs_running--;
		pthread_mutex_unlock(&c->legs_lock);
		pthread_mutex_lock(&r->lock);
		r->refs--;
		pthread_mutex_unlock(&r->lock);
	}
	return ok;
}

bool route_quiesce(struct mp_client *c)
{
	/* A leg stuck at a hung server may run for the whole timeout: the
	 * caller of close does not wait for it; the last leg frees the
	 * handle instead. */
	pthread_mutex_lock(&c->legs_lock);
	bool idle = c->legs_running == 0;
	if (!idle)
		c->orphaned = true;
	pthread_mutex_unlock(&c->legs_lock);
	return idle;
}

/* Takes leg i's answer for the caller (under r->lock). */
static enum attempt take(struct race *r, int i, struct reply *ret, struct server_entry **served,
                         mp_error *err)
{
	struct leg *l = &r->legs[i];
	*served = l->s;
	if (l->outcome == ATTEMPT_ANSWERED) {
		*ret = l->rep;
		l->outcome = ATTEMPT_FAILED; /* now the caller's to release */
		return ATTEMPT_ANSWERED;
	}
	*err = l->err;
	return l->outcome;
}

/* slow lost a race to fast. Twice in a row without an answer of its own
 * in between, and it is marked down (a frozen server then costs two hedge
 * delays per outage); once may be a hiccup, such as a mirror catching up. */
static void beaten(struct mp_client *c, struct server_entry *slow, const struct read_fields *rf,
                   const struct server_entry *fast, int64_t waited_ns)
{
	pthread_mutex_lock(&slow->lock);
	bool twice = ++slow->beaten >= 2;
	pthread_mutex_unlock(&slow->lock);
	if (twice)
		servers_mark_down(c, slow, rf ? rf->min_version : 0, rf ? rf->max_staleness_ms : 0,
		                  "no answer in %lld ms, twice, while %s answered",
		                  (long long)(waited_ns / 1000000), fast->address);
}

/* Both legs on threads: used when s has no connection yet (its connect and
 * HELLO may hang as well). */
static enum attempt race_threads(struct mp_client *c, struct server_entry *s,
                                 const struct read_fields *rf, struct server_entry *backup,
                                 const struct read_fields *rf_backup, const struct request_body *b,
                                 uint64_t timeout_ms, struct reply *ret,
                                 struct server_entry **served, mp_error *err)
{
	struct race *r = race_new(c, b, timeout_ms, false);
	if (r == NULL || !leg_start(r, 0, s, rf)) {
		if (r != NULL)
			race_unref(r);
		*served = s;
		return route_once(c, s, b, rf, timeout_ms, ret, err);
	}
	int64_t start = client_now_ns();
	int64_t hedge_at = start + hedge_delay_ns(c, s);
	int64_t deadline = start + (int64_t)timeout_ms * 1000000 + 100000000;
	bool hedged = false;
	enum attempt a = ATTEMPT_FAILED;
	pthread_mutex_lock(&r->lock);
	for (;;) {
		struct leg *l0 = &r->legs[0], *l1 = &r->legs[1];
		if (l0->done && (l0->outcome == ATTEMPT_ANSWERED || !hedged || l1->done)) {
			if (l0->outcome != ATTEMPT_ANSWERED && hedged &&
			    l1->outcome == ATTEMPT_ANSWERED)
				a = take(r, 1, ret, served, err);
			else
				a = take(r, 0, ret, served, err);
			break;
		}
		if (hedged && l1->done && (l1->outcome == ATTEMPT_ANSWERED || l0->done)) {
			a = take(r, 1, ret, served, err);
			break;
		}
		int64_t now = client_now_ns();
		if (!hedged && now >= hedge_at) {
			pthread_mutex_unlock(&r->lock);
			hedged = leg_start(r, 1, backup, rf_backup);
			pthread_mutex_lock(&r->lock);
			if (!hedged)
				hedge_at = INT64_MAX;
			continue;
		}
		if (now >= deadline) {
			*served = s;
			a = ATTEMPT_UNKNOWN;
			mperr(err, -ETIMEDOUT, "%s: no answer in time", s->address);
			break;
		}
		int64_t until = !hedged && hedge_at < deadline ? hedge_at : deadline;
		struct timespec ts = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
		pthread_cond_timedwait(&r->cond, &r->lock, &ts);
	}
	r->finished = true;
	bool s_pending = !r->legs[0].done;
	pthread_mutex_unlock(&r->lock);
	if (a == ATTEMPT_ANSWERED && *served == backup && s_pending)
		beaten(c, s, rf, backup, client_now_ns() - start);
	race_unref(r);
	return a;
}

/* Waits (up to deadline) for the backup leg after s failed. */
static enum attempt backup_only(struct race *r, struct reply *ret, struct server_entry **served,
                                int64_t deadline, mp_error *err)
{
	pthread_mutex_lock(&r->lock);
	while (!r->legs[1].done && client_now_ns() < deadline) {
		struct timespec ts = {(time_t)(deadline / 1000000000),
		                      (long)(deadline % 1000000000)};
		pthread_cond_timedwait(&r->cond, &r->lock, &ts);
	}
	enum attempt a = ATTEMPT_UNKNOWN;
	if (r->legs[1].done)
		a = take(r, 1, ret, served, err);
	else
		mperr(err, -ETIMEDOUT, "%s: no answer in time", r->legs[1].s->address);
	r->finished = true;
	pthread_mutex_unlock(&r->lock);
	return a;
}

enum attempt route_hedged(struct mp_client *c, struct server_entry *s, const struct read_fields *rf,
                          struct server_entry *backup, const struct read_fields *rf_backup,
                          const struct request_body *b, uint64_t timeout_ms, struct reply *ret,
                          struct server_entry **ret_served, mp_error *err)
{
	*ret_served = s;
	if (backup == NULL)
		return route_once(c, s, b, rf, timeout_ms, ret, err);
	struct channel *ch = servers_take_pooled(s);
	if (ch == NULL)
		return race_threads(c, s, rf, backup, rf_backup, b, timeout_ms, ret, ret_served,
		                    err);
	int64_t start = client_now_ns();
	int64_t deadline = start + (int64_t)timeout_ms * 1000000;
	uint64_t id;
	if (channel_send(ch, b, rf, timeout_ms, &id, err) < 0) {
		/* A pooled connection the server had closed: start over. */
		channel_close(ch);
		return race_threads(c, s, rf, backup, rf_backup, b, timeout_ms, ret, ret_served,
		                    err);
	}
	int64_t hedge = hedge_delay_ns(c, s);
	if (channel_readable(ch, (int)((hedge + 999999) / 1000000))) {
		if (channel_receive(ch, id, deadline, ret, err) < 0) {
			channel_close(ch);
			return ATTEMPT_UNKNOWN;
		}
		servers_note_latency(s, client_now_ns() - start);
		servers_put_channel(s, ch);
		return ATTEMPT_ANSWERED;
	}
	/* s is slow: the same read goes to backup too. */
	struct race *r = race_new(c, b, timeout_ms, true);
	if (r == NULL || r->efd < 0 || !leg_start(r, 1, backup, rf_backup)) {
		if (r != NULL)
			race_unref(r);
		if (channel_receive(ch, id, deadline, ret, err) < 0) {
			channel_close(ch);
			return ATTEMPT_UNKNOWN;
		}
		servers_put_channel(s, ch);
		return ATTEMPT_ANSWERED;
	}
	enum attempt a = ATTEMPT_UNKNOWN;
	bool s_failed = false, backup_failed = false;
	for (;;) {
		int64_t now = client_now_ns();
		if (now >= deadline) {
			mperr(err, -ETIMEDOUT, "%s: no answer in time", s->address);
			break;
		}
		struct pollfd pf[2] = {{.fd = channel_fd(ch), .events = POLLIN},
		                       {.fd = backup_failed ? -1 : r->efd, .events = POLLIN}};
		int left = (int)((deadline - now + 999999) / 1000000);
		bool ready = channel_readable(ch, 0);
		if (!ready && poll(pf, 2, left) < 0)
			continue;
		if (ready || (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
			if (channel_receive(ch, id, deadline, ret, err) == 0) {
				servers_note_latency(s, client_now_ns() - start);
				servers_put_channel(s, ch);
				ch = NULL;
				pthread_mutex_lock(&r->lock);
				r->finished = true;
				pthread_mutex_unlock(&r->lock);
				a = ATTEMPT_ANSWERED;
				break;
			}
			s_failed = true;
			break;
		}
		if (pf[1].revents & POLLIN) {
			uint64_t v;
			if (read(r->efd, &v, sizeof(v)) < 0) {
				/* Spurious: the leg's state below is what counts. */
			}
			pthread_mutex_lock(&r->lock);
			bool done = r->legs[1].done;
			bool won = done && r->legs[1].outcome == ATTEMPT_ANSWERED;
			if (won) {
				a = take(r, 1, ret, ret_served, err);
				r->finished = true;
			}
			pthread_mutex_unlock(&r->lock);
			if (won)
				break;
			if (done) {
				/* The backup failed: s is still our best hope. */
				backup_failed = true;
				servers_mark_down(c, backup, rf_backup ? rf_backup->min_version : 0,
				                  rf_backup ? rf_backup->max_staleness_ms : 0, "%s",
				                  r->legs[1].err.message);
			}
		}
	}
	if (ch != NULL)
		channel_close(ch); /* an answer may still be on its way */
	if (s_failed)
		a = backup_only(r, ret, ret_served, deadline, err);
	else if (a != ATTEMPT_ANSWERED) {
		pthread_mutex_lock(&r->lock);
		r->finished = true;
		pthread_mutex_unlock(&r->lock);
	}
	if (a == ATTEMPT_ANSWERED && *ret_served == backup)
		beaten(c, s, rf, backup, client_now_ns() - start);
	race_unref(r);
	return a;
}

int route_first_mirror(struct mp_client *c, const struct request_body *b,
                       int (*accept)(void *arg, const char *address, const struct reply *rep,
                                     mp_error *err),
                       void *arg, const char *none_why, mp_error *err)
{
	mp_error last = {0};
	int r = mperr(&last, -ENOENT, "%s", none_why);
	size_t total = __atomic_load_n(&c->servers.n, __ATOMIC_ACQUIRE);
	for (size_t i = 0; i < total; i++) {
		struct server_entry *s = c->servers.entries[i];
		if (s->is_primary || !servers_routable(s))
			continue;
		struct reply rep;
		if (route_once(c, s, b, NULL, c->cfg.timeout_ms, &rep, &last) != ATTEMPT_ANSWERED) {
			r = last.code ? last.code : -EIO;
			continue;
		}
		r = accept(arg, s->address, &rep, &last);
		reply_release(&rep);
		if (r == 0)
			return 0;
	}
	if (err != NULL)
		*err = last;
	return r;
}
