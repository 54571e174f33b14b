#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "json.h"
#include "log.h"
#include "stream.h"
#include "proto.h"

#define PUMP_HIGH            (4u << 20)  /* fill a catching-up subscriber up to this */
#define PUMP_LOW             (1u << 20)  /* and refill when it drains below this */
#define LIVE_MAX             (64u << 20) /* a live subscriber this far behind catches up instead */
#define FRAME_VERSIONS       512
#define FRAME_BYTES          (1u << 20)
#define SNAPSHOT_CHUNK_NODES 2048

enum sub_state { SUB_WAIT_SNAPSHOT, SUB_CATCHUP, SUB_LIVE };

struct site_state {
	LIST_ENTRY(site_state) entry;
	char name[65];
	char peer[64];
	uint64_t acked;
	int64_t last_seen_ns;
	int connected;
};

struct subscriber {
	LIST_ENTRY(subscriber) entry;
	struct conn *c;
	struct site_state *site;
	uint64_t next; /* next version to send */
	uint64_t acked;
	enum sub_state state;
	int64_t last_send_ns;
};

struct streamer {
	struct stream_host h;
	LIST_HEAD(, subscriber) subscribers;
	LIST_HEAD(, site_state) sites;
	struct metric *m_snapshots, *m_subscribers, *m_lag_versions, *m_lag_seconds;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const char *state_name(enum sub_state s)
{
	switch (s) {
	case SUB_WAIT_SNAPSHOT:
		return "snapshot";
	case SUB_CATCHUP:
		return "catching up";
	default:
		return "live";
	}
}

static struct site_state *site_get(struct streamer *st, const char *name)
{
	struct site_state *s;
	LIST_FOREACH(s, &st->sites, entry)
	if (strcmp(s->name, name) == 0)
		return s;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	snprintf(s->name, sizeof(s->name), "%s", name);
	LIST_INSERT_HEAD(&st->sites, s, entry);
	return s;
}

static void request_snapshot(struct streamer *st, struct subscriber *sub);

struct streamer *stream_new(const struct stream_host *host)
{
	struct streamer *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return NULL;
	st->h = *host;
	LIST_INIT(&st->subscribers);
	LIST_INIT(&st->sites);
	char name[128];
	snprintf(name, sizeof(name), "%s_subscribers", host->metric_prefix);
	st->m_subscribers = metrics_gauge(host->metrics, name, "Connected subscribers (mirrors)");
	snprintf(name, sizeof(name), "%s_snapshots_total", host->metric_prefix);
	st->m_snapshots = metrics_counter(host->metrics, name, "Snapshots sent to subscribers");
	snprintf(name, sizeof(name), "%s_site_lag_versions", host->metric_prefix);
	st->m_lag_versions = metrics_labeled(
	    host->metrics, name, "Versions a site has not acknowledged", METRIC_GAUGE, "site");
	snprintf(name, sizeof(name), "%s_site_lag_seconds", host->metric_prefix);
	st->m_lag_seconds = metrics_labeled(host->metrics, name,
	                                    "Age of the oldest version a site has not acknowledged",
	                                    METRIC_GAUGE, "site");
	return st;
}

void stream_set_log(struct streamer *st, struct changelog *log)
{
	st->h.log = log;
}

void stream_set_heartbeat(struct streamer *st, uint64_t heartbeat_ms, uint64_t site_keep_ms)
{
	st->h.heartbeat_ms = heartbeat_ms;
	st->h.site_keep_ms = site_keep_ms;
}

size_t stream_subscribers(const struct streamer *st)
{
	size_t n = 0;
	const struct subscriber *sub;
	LIST_FOREACH(sub, &st->subscribers, entry)
	n++;
	return n;
}

void stream_reset(struct streamer *st)
{
	struct subscriber *sub;
	LIST_FOREACH(sub, &st->subscribers, entry)
	if (sub->state != SUB_WAIT_SNAPSHOT)
		request_snapshot(st, sub);
}

void stream_disconnect_all(struct streamer *st, const char *why)
{
	struct subscriber *sub;
	while ((sub = LIST_FIRST(&st->subscribers)) != NULL)
		conn_close(sub->c, why); /* detaches sub */
}

void stream_free(struct streamer *st)
{
	if (st == NULL)
		return;
	struct site_state *s;
	while ((s = LIST_FIRST(&st->sites)) != NULL) {
		LIST_REMOVE(s, entry);
		free(s);
	}
	free(st);
}

/* Sends [type, 0, {key: [n items already encoded in raw]}]. */
static void send_raw_array(struct conn *c, uint32_t type, const char *key, uint32_t n,
                           const void *raw, size_t len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, type, 0, 1);
	msg_pack_key(&pk, key);
	msgpack_pack_array(&pk, n);
	msg_pack_raw(&pk, raw, len);
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

/* Builds one CHANGES frame of consecutive cached versions into sb. */
static void build_changes(msgpack_sbuffer *sb, const struct changelog_entry *const *es, size_t n)
{
	msgpack_packer pk;
	msg_begin(sb, &pk, MT_CHANGES, 0, 1);
	msg_pack_key(&pk, "versions");
	msgpack_pack_array(&pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		msg_pack_raw(&pk, es[i]->record, es[i]->record_len);
	msg_end(sb);
}

static void send_changes(struct conn *c, const struct changelog_entry *const *es, size_t n)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	build_changes(&sb, es, n);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

static void request_snapshot(struct streamer *st, struct subscriber *sub);

struct store_pump {
	struct conn *c;
	msgpack_sbuffer body; /* records of the frame being built */
	size_t n;
	uint64_t expect;
	bool gap;
};

static void store_pump_flush(struct store_pump *sp)
{
	if (sp->n == 0)
		return;
	send_raw_array(sp->c, MT_CHANGES, "versions", (uint32_t)sp->n, sp->body.data,
	               sp->body.size);
	msgpack_sbuffer_clear(&sp->body);
	sp->n = 0;
}

static int store_pump_cb(void *arg, const struct changelog_entry *v)
{
	struct store_pump *sp = arg;
	if (v->version != sp->expect) {
		sp->gap = true;
		return -ERANGE;
	}
	msgpack_sbuffer_write(&sp->body, (const char *)v->record, v->record_len);
	sp->n++;
	sp->expect++;
	if (sp->n >= FRAME_VERSIONS || sp->body.size >= FRAME_BYTES)
		store_pump_flush(sp);
	return 0;
}

void stream_pump(struct streamer *st, struct conn *c)
{
	struct subscriber *sub = c->sub;
	if (sub == NULL || sub->state != SUB_CATCHUP)
		return;
	const struct changelog_entry *batch[FRAME_VERSIONS];
	while (conn_alive(c) && conn_output_len(c) < PUMP_HIGH && sub->next <= (*st->h.version)) {
		const struct changelog_entry *e = changelog_get(st->h.log, sub->next);
		if (e != NULL) {
			size_t n = 0, bytes = 0;
			while (n < FRAME_VERSIONS && bytes < FRAME_BYTES && e != NULL) {
				batch[n++] = e;
				bytes += e->record_len;
				e = changelog_get(st->h.log, sub->next + n);
				if (sub->next + n > (*st->h.version))
					break;
			}
			send_changes(c, batch, n);
			sub->next += n;
			continue;
		}
		if (sub->next < changelog_store_oldest(st->h.log)) {
			log_info("site %s needs version %llu, older than the log keeps (%llu): "
			         "sending a snapshot",
			         sub->site->name, (unsigned long long)sub->next,
			         (unsigned long long)changelog_store_oldest(st->h.log));
			request_snapshot(st, sub);
			return;
		}
		if (st->h.read_log == NULL) {
			log_info(
			    "site %s needs version %llu, older than this cache keeps: sending a "
			    "snapshot",
			    sub->site->name, (unsigned long long)sub->next);
			request_snapshot(st, sub);
			return;
		}
		struct store_pump sp = {.c = c, .expect = sub->next};
		msgpack_sbuffer_init(&sp.body);
		uint64_t want = (*st->h.version) - sub->next + 1;
		char err[256];
		int r = st->h.read_log(st->h.owner, sub->next, want < 4096 ? want : 4096, PUMP_HIGH,
		                       store_pump_cb, &sp, err, sizeof(err));
		store_pump_flush(&sp);
		msgpack_sbuffer_destroy(&sp.body);
		uint64_t got = sp.expect - sub->next;
		sub->next = sp.expect;
		if (sp.gap || (r == 0 && got == 0)) {
			log_info("site %s: version %llu is no longer in the change log: sending a "
			         "snapshot",
			         sub->site->name, (unsigned long long)sub->next);
			request_snapshot(st, sub);
			return;
		}
		if (r < 0) {
			char why[300];
			snprintf(why, sizeof(why), "cannot read the change log: %s", err);
			log_error("site %s: %s", sub->site->name, why);
			conn_send_error(c, 0, -EIO, "%s", why);
			conn_close(c, why);
			return;
		}
	}
	if (conn_alive(c) && sub->next > (*st->h.version)) {
		sub->state = SUB_LIVE;
		log_info("site %s is live at version %llu", sub->site->name,
		         (unsigned long long)(*st->h.version));
	}
	sub->last_send_ns = now_ns();
}

/* ---- snapshots ---- */

struct snap_writer {
	struct conn *c;
	msgpack_sbuffer nodes;
	msgpack_packer pk;
	uint32_t n;
	uint64_t total;
};

static void snap_flush(struct snap_writer *w)
{
	if (w->n == 0)
		return;
	send_raw_array(w->c, MT_SNAPSHOT_CHUNK, "nodes", w->n, w->nodes.data, w->nodes.size);
	msgpack_sbuffer_clear(&w->nodes);
	w->n = 0;
}

static int snap_visit(void *arg, const struct node_rec *rec)
{
	struct snap_writer *w = arg;
	msg_pack_node(&w->pk, rec);
	w->n++;
	w->total++;
	if (w->n >= SNAPSHOT_CHUNK_NODES || w->nodes.size >= FRAME_BYTES)
		snap_flush(w);
	return 0;
}

struct snapshot_job {
	struct streamer *st;
	struct conn *c;
};

/* Runs when the namespace equals the published version. */
static void send_snapshot(void *arg)
{
	struct snapshot_job *job = arg;
	struct streamer *st = job->st;
	struct conn *c = job->c;
	free(job);
	struct subscriber *sub = c->sub;
	if (!conn_alive(c) || sub == NULL || sub->state != SUB_WAIT_SNAPSHOT) {
		conn_unref(c);
		return;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_SNAPSHOT_BEGIN, 0, 5);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, (*st->h.version));
	msg_pack_key(&pk, "digest");
	msg_pack_binn(&pk, st->h.digest, DIGEST_LEN);
	msg_pack_key(&pk, "count");
	msgpack_pack_uint64(&pk, namespace_count((*st->h.ns)));
	msg_pack_key(&pk, "next_ino");
	msgpack_pack_uint64(&pk, (*st->h.next_ino));
	msg_pack_key(&pk, "cluster_id");
	msg_pack_cstr(&pk, st->h.cluster_id);
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);

	struct snap_writer w = {.c = c};
	msgpack_sbuffer_init(&w.nodes);
	msgpack_packer_init(&w.pk, &w.nodes, msgpack_sbuffer_write);
	namespace_foreach((*st->h.ns), snap_visit, &w);
	snap_flush(&w);
	msgpack_sbuffer_destroy(&w.nodes);

	msg_begin(&sb, &pk, MT_SNAPSHOT_END, 0, 2);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, (*st->h.version));
	msg_pack_key(&pk, "count");
	msgpack_pack_uint64(&pk, w.total);
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	metric_add(st->m_snapshots, 1);
	log_info("sent site %s a snapshot of %llu entries at version %llu", sub->site->name,
	         (unsigned long long)w.total, (unsigned long long)(*st->h.version));
	sub->next = (*st->h.version) + 1;
	sub->state = SUB_CATCHUP;
	stream_pump(st, c);
	conn_unref(c);
}

static void request_snapshot(struct streamer *st, struct subscriber *sub)
{
	struct snapshot_job *job = malloc(sizeof(*job));
	if (job == NULL) {
		conn_close(sub->c, "out of memory");
		return;
	}
	sub->state = SUB_WAIT_SNAPSHOT;
	job->st = st;
	job->c = sub->c;
	conn_ref(sub->c);
	st->h.when_idle(st->h.owner, send_snapshot, job);
}

/* ---- subscription ---- */

struct digest_probe {
	uint64_t want;
	uint8_t *out;
	bool found;
};

static int copy_digest(void *arg, const struct changelog_entry *v)
{
	struct digest_probe *dp = arg;
	if (v->version == dp->want) {
		memcpy(dp->out, v->digest, DIGEST_LEN);
		dp->found = true;
	}
	return -1; /* one is enough */
}

/* The digest at version v: from memory, else from the owner's durable log;
 * -ENOENT once no log holds v. */
static int digest_at(struct streamer *st, uint64_t v, uint8_t out[DIGEST_LEN])
{
	if (v == (*st->h.version)) {
		memcpy(out, st->h.digest, DIGEST_LEN);
		return 0;
	}
	const struct changelog_entry *e = changelog_get(st->h.log, v);
	if (e != NULL) {
		memcpy(out, e->digest, DIGEST_LEN);
		return 0;
	}
	if (st->h.read_log == NULL || v < changelog_store_oldest(st->h.log))
		return -ENOENT;
	struct digest_probe dp = {v, out, false};
	char err[128];
	int r = st->h.read_log(st->h.owner, v, 1, 1, copy_digest, &dp, err, sizeof(err));
	if (dp.found)
		return 0;
	return r < 0 && r != -1 ? -EIO : -ENOENT;
}

void stream_subscribe(struct streamer *st, struct conn *c, uint64_t id, const msgpack_object *body)
{
	char err[256];
	if (c->sub != NULL) {
		conn_send_error(c, id, -EPROTO, "already subscribed");
		return;
	}
	if (!c->open_access && c->claims.kind != TOKEN_SITE) {
		conn_send_error(c, id, -EACCES,
		                "SUBSCRIBE needs a site token (this is a client "
		                "token of '%s')",
		                c->claims.name);
		return;
	}
	uint64_t from;
	const char *site = NULL, *digest = NULL;
	size_t site_len = 0, dlen = 0;
	if (msg_get_u64(body, "from", true, UINT64_MAX, &from, err, sizeof(err)) < 0 ||
	    msg_get_bytes(body, "site", false, 1, 64, &site, &site_len, err, sizeof(err)) < 0 ||
	    msg_get_bytes(body, "digest", false, DIGEST_LEN, DIGEST_LEN, &digest, &dlen, err,
	                  sizeof(err)) < 0) {
		conn_send_error(c, id, -EINVAL, "SUBSCRIBE: %s", err);
		return;
	}
	char name[65];
	if (!c->open_access)
		snprintf(name, sizeof(name), "%s", c->claims.name);
	else if (site != NULL)
		snprintf(name, sizeof(name), "%.*s", (int)site_len, site);
	else
		snprintf(name, sizeof(name), "%s", c->peer);
	if (from > (*st->h.version)) {
		char why[400];
		snprintf(why, sizeof(why),
		         "site %s is at version %llu, ahead of the primary at %llu: it must "
		         "re-bootstrap from a snapshot (SUBSCRIBE from 0)",
		         name, (unsigned long long)from, (unsigned long long)(*st->h.version));
		log_warn("%s", why);
		conn_send_error(c, id, -ESTALE, "%s", why);
		return;
	}
	struct subscriber *sub = calloc(1, sizeof(*sub));
	struct site_state *ss = site_get(st, name);
	if (sub == NULL || ss == NULL) {
		free(sub);
		conn_send_error(c, id, -ENOMEM, "out of memory");
		return;
	}
	sub->c = c;
	sub->site = ss;
	sub->acked = from;
	ss->connected++;
	ss->acked = from;
	ss->last_seen_ns = now_ns();
	snprintf(ss->peer, sizeof(ss->peer), "%s", c->peer);
	c->sub = sub;
	conn_set_stream_mode(c, PUMP_LOW);
	LIST_INSERT_HEAD(&st->subscribers, sub, entry);

	bool snapshot = false;
	const char *why = "";
	if (from < (*st->h.version)) {
		uint64_t oldest = changelog_store_oldest(st->h.log);
		if (oldest == 0 || from + 1 < oldest) {
			snapshot = true;
			why = "older than the change log keeps";
		}
	}
	uint8_t mine[DIGEST_LEN];
	if (!snapshot && from > 0 && digest != NULL) {
		int dr = digest_at(st, from, mine);
		if (dr < 0) {
			/* Unverifiable is not trusted: the mirror may hold
			 * anything. */
			snapshot = true;
			why = "its digest at that version can no longer be checked";
		} else if (memcmp(mine, digest, DIGEST_LEN) != 0) {
			snapshot = true;
			why = "its digest differs from the primary's at that version (divergence)";
			log_warn("site %s at version %llu diverged from the primary: "
			         "re-bootstrapping it",
			         name, (unsigned long long)from);
		}
	}

	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_REPLY, id, 3);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, (*st->h.version));
	msg_pack_key(&pk, "from");
	msgpack_pack_uint64(&pk, from);
	msg_pack_key(&pk, "snapshot");
	if (snapshot)
		msgpack_pack_true(&pk);
	else
		msgpack_pack_false(&pk);
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);

	log_info("site %s (%s) subscribed from version %llu%s%s", name, c->peer,
	         (unsigned long long)from, snapshot ? ": snapshot, " : "", why);
	stream_update_metrics(st);
	if (snapshot) {
		request_snapshot(st, sub);
		return;
	}
	sub->next = from + 1;
	sub->state = SUB_CATCHUP;
	stream_pump(st, c);
}

void stream_ack(struct streamer *st, struct conn *c, uint64_t id, const msgpack_object *body)
{
	char err[200];
	uint64_t v;
	struct subscriber *sub = c->sub;
	if (sub == NULL) {
		conn_send_error(c, id, -EPROTO, "ACK without SUBSCRIBE");
		return;
	}
	if (msg_get_u64(body, "version", true, UINT64_MAX, &v, err, sizeof(err)) < 0) {
		conn_send_error(c, id, -EINVAL, "ACK: %s", err);
		return;
	}
	if (v >= sub->next && sub->state != SUB_WAIT_SNAPSHOT) {
		log_warn("site %s acknowledged version %llu it was never sent (next %llu)",
		         sub->site->name, (unsigned long long)v, (unsigned long long)sub->next);
		return;
	}
	if (v > sub->acked) {
		sub->acked = v;
		sub->site->acked = v;
	}
	sub->site->last_seen_ns = now_ns();
}

void stream_detach(struct streamer *st, struct conn *c)
{
	struct subscriber *sub = c->sub;
	if (sub == NULL)
		return;
	LIST_REMOVE(sub, entry);
	sub->site->connected--;
	sub->site->last_seen_ns = now_ns();
	c->sub = NULL;
	free(sub);
	stream_update_metrics(st);
}

void stream_publish(struct streamer *st, uint64_t first, uint64_t last)
{
	const struct changelog_entry *batch[FRAME_VERSIONS];
	msgpack_sbuffer frame;
	bool built = false;
	msgpack_sbuffer_init(&frame);
	struct subscriber *sub;
	LIST_FOREACH(sub, &st->subscribers, entry)
	{
		if (sub->state != SUB_LIVE)
			continue;
		if (sub->next != first || last - first + 1 > FRAME_VERSIONS ||
		    conn_output_len(sub->c) > LIVE_MAX || changelog_get(st->h.log, first) == NULL) {
			/* Not a plain append: let the pump work it out. */
			sub->state = SUB_CATCHUP;
			stream_pump(st, sub->c);
			continue;
		}
		if (!built) {
			size_t n = 0;
			for (uint64_t v = first; v <= last; v++)
				batch[n++] = changelog_get(st->h.log, v);
			build_changes(&frame, batch, n);
			built = true;
		}
		conn_send(sub->c, frame.data, frame.size);
		sub->next = last + 1;
		sub->last_send_ns = now_ns();
	}
	msgpack_sbuffer_destroy(&frame);
}

void stream_heartbeat(struct streamer *st)
{
	int64_t now = now_ns();
	int64_t interval = (int64_t)st->h.heartbeat_ms * 1000000;
	struct subscriber *sub;
	LIST_FOREACH(sub, &st->subscribers, entry)
	{
		if (sub->state == SUB_WAIT_SNAPSHOT || now - sub->last_send_ns < interval)
			continue;
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msg_begin(&sb, &pk, MT_HEARTBEAT, 0, 2);
		msg_pack_key(&pk, "version");
		msgpack_pack_uint64(&pk, (*st->h.version));
		msg_pack_key(&pk, "time");
		msgpack_pack_int64(&pk, st->h.fresh_ns != NULL ? *st->h.fresh_ns : now);
		msg_end(&sb);
		conn_send(sub->c, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		sub->last_send_ns = now;
	}
	stream_update_metrics(st);
}

uint64_t stream_min_needed(const struct streamer *st)
{
	uint64_t min = UINT64_MAX;
	int64_t now = now_ns();
	int64_t keep = (int64_t)st->h.site_keep_ms * 1000000;
	struct site_state *s;
	LIST_FOREACH(s, &st->sites, entry)
	{
		/* A site that went away keeps its place in the log for as long
		 * as the log's age limit, so a short outage needs no snapshot. */
		if (s->connected == 0 && now - s->last_seen_ns > keep)
			continue;
		if (s->acked + 1 < min)
			min = s->acked + 1;
	}
	return min;
}

static double site_lag_seconds(const struct streamer *st, const struct site_state *s, int64_t now)
{
	if (s->acked >= (*st->h.version))
		return 0;
	const struct changelog_entry *e = changelog_get(st->h.log, s->acked + 1);
	int64_t since = e != NULL ? e->time : s->last_seen_ns;
	return now > since ? (double)(now - since) / 1e9 : 0;
}

void stream_update_metrics(struct streamer *st)
{
	int64_t now = now_ns();
	size_t n = 0;
	struct subscriber *sub;
	LIST_FOREACH(sub, &st->subscribers, entry)
	n++;
	metric_set(st->m_subscribers, (double)n);
	struct site_state *s;
	LIST_FOREACH(s, &st->sites, entry)
	{
		metric_set(metric_child(st->m_lag_versions, s->name),
		           (double)((*st->h.version) - s->acked));
		metric_set(metric_child(st->m_lag_seconds, s->name), site_lag_seconds(st, s, now));
	}
}

void stream_write_status(struct streamer *st, struct json_writer *w)
{
	int64_t now = now_ns();
	json_begin_array(w);
	struct site_state *s;
	LIST_FOREACH(s, &st->sites, entry)
	{
		const char *state = "disconnected";
		struct subscriber *sub;
		LIST_FOREACH(sub, &st->subscribers, entry)
		if (sub->site == s)
			state = state_name(sub->state);
		json_begin_object(w);
		json_key(w, "site");
		json_string(w, s->name);
		json_key(w, "peer");
		json_string(w, s->peer);
		json_key(w, "connected");
		json_bool(w, s->connected > 0);
		json_key(w, "state");
		json_string(w, state);
		json_key(w, "acked_version");
		json_uint(w, s->acked);
		json_key(w, "lag_versions");
		json_uint(w, (*st->h.version) - s->acked);
		json_key(w, "lag_seconds");
		json_double(w, site_lag_seconds(st, s, now));
		json_end_object(w);
	}
	json_end_array(w);
}
