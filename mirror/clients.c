/* Client requests at a mirror: reads answered from the replica once it has
 * reached the version the client asks for (min_version), parked until then
 * or until a deadline, after which they get STALE so the client goes to the
 * primary; writes refused with where to send them; cascaded mirrors served
 * the change stream. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mirror.h"
#include "reads.h"
#include "replication.h"

#define READ_DEADLINE_MAX_MS 60000

static void answer(struct mirror *m, struct conn *c, struct request *r)
{
	struct read_view v = {.ns = m->ns,
	                      .version = m->version,
	                      .cluster_id = m->cluster_id,
	                      .role = "mirror",
	                      .site = m->cfg.site,
	                      .staleness_ms = mirror_staleness_ms(m),
	                      .primary_version = mirror_primary_version(m),
	                      .secret = m->secret,
	                      .secret_len = m->secret_len,
	                      .replica_of = m->repl != NULL ? mirror_replica_of : NULL,
	                      .replica_arg = m};
	reads_answer(&v, c, r->type, r->id, r->frame.body);
}

/* Whether the replica is within a read's max_staleness_ms; if not, the
 * read gets ESTALE at once: waiting would not make an unreachable
 * upstream any closer, and the primary can answer now. */
static bool fresh_enough(struct mirror *m, struct request *r, uint64_t max_staleness_ms)
{
	int64_t staleness = mirror_staleness_ms(m);
	if (m->ready && staleness >= 0 && (uint64_t)staleness <= max_staleness_ms)
		return true;
	if (!m->ready)
		conn_send_error(r->c, r->id, -ESTALE,
		                "mirror %s is bootstrapping (staleness unknown), max_staleness_ms "
		                "%llu: read from the primary",
		                m->cfg.site, (unsigned long long)max_staleness_ms);
	else if (staleness < 0)
		conn_send_error(r->c, r->id, -ESTALE,
		                "mirror %s has not heard from an upstream (staleness unknown), "
		                "max_staleness_ms %llu: read from the primary",
		                m->cfg.site, (unsigned long long)max_staleness_ms);
	else
		conn_send_error(r->c, r->id, -ESTALE,
		                "mirror %s is %lld ms stale, over max_staleness_ms %llu: read from "
		                "the primary",
		                m->cfg.site, (long long)staleness,
		                (unsigned long long)max_staleness_ms);
	return false;
}

static void stale(struct mirror *m, struct request *r)
{
	metric_add(m->m_stale, 1);
	conn_send_error(r->c, r->id, -ESTALE,
	                "mirror %s is at version %llu, below min_version %llu, after waiting "
	                "for it: read from the primary",
	                m->cfg.site, (unsigned long long)m->version,
	                (unsigned long long)r->min_version);
}

static void arm_park_timer(struct mirror *m)
{
	int64_t earliest = INT64_MAX;
	struct request *r;
	TAILQ_FOREACH(r, &m->parked, entry)
	if (r->deadline_ns < earliest)
		earliest = r->deadline_ns;
	evtimer_del(m->park_ev);
	if (earliest == INT64_MAX)
		return;
	int64_t wait = earliest - mirror_now_ns();
	if (wait < 0)
		wait = 0;
	struct timeval tv = {(time_t)(wait / 1000000000), (suseconds_t)(wait % 1000000000) / 1000};
	evtimer_add(m->park_ev, &tv);
}

void mirror_wake_parked(struct mirror *m, bool check_deadlines)
{
	if (m->nparked == 0)
		return;
	int64_t now = check_deadlines ? mirror_now_ns() : 0;
	struct request *r, *next;
	bool changed = false;
	for (r = TAILQ_FIRST(&m->parked); r != NULL; r = next) {
		next = TAILQ_NEXT(r, entry);
		bool ready = m->ready && m->version >= r->min_version;
		bool expired = check_deadlines && now >= r->deadline_ns;
		if (!ready && !expired && conn_alive(r->c))
			continue;
		TAILQ_REMOVE(&m->parked, r, entry);
		m->nparked--;
		changed = true;
		if (conn_alive(r->c)) {
			if (ready)
				answer(m, r->c, r);
			else
				stale(m, r);
		}
		request_free(r);
	}
	if (changed || check_deadlines)
		arm_park_timer(m);
}

void mirror_drop_parked(struct mirror *m)
{
	struct request *r;
	while ((r = TAILQ_FIRST(&m->parked)) != NULL) {
		TAILQ_REMOVE(&m->parked, r, entry);
		request_free(r);
	}
	m->nparked = 0;
}

static void read_request(struct mirror *m, struct conn *c, struct request *r)
{
	char err[200];
	uint64_t min_version = 0, deadline_ms = m->cfg.read_deadline_ms, max_staleness_ms = 0;
	const msgpack_object *body = r->frame.body;
	int bound = 1; /* 0 when the read carries max_staleness_ms */
	if (msg_get_u64(body, "min_version", false, UINT64_MAX, &min_version, err, sizeof(err)) <
	        0 ||
	    msg_get_u64(body, "deadline_ms", false, READ_DEADLINE_MAX_MS, &deadline_ms, err,
	                sizeof(err)) < 0 ||
	    (bound = msg_get_u64(body, "max_staleness_ms", false, MAX_STALENESS_MS_MAX,
	                         &max_staleness_ms, err, sizeof(err))) < 0) {
		conn_send_error(c, r->id, -EINVAL, "%s: %s", proto_msg_name(r->type), err);
		request_free(r);
		return;
	}
	metric_add(m->m_reads, 1);
	if (bound == 0 && !fresh_enough(m, r, max_staleness_ms)) {
		request_free(r);
		return;
	}
	/* A replica that is bootstrapping holds nothing worth reading. */
	if (m->ready && m->version >= min_version) {
		answer(m, c, r);
		request_free(r);
		return;
	}
	if (deadline_ms == 0) {
		r->min_version = min_version;
		stale(m, r);
		request_free(r);
		return;
	}
	r->min_version = min_version;
	r->deadline_ns = mirror_now_ns() + (int64_t)deadline_ms * 1000000;
	TAILQ_INSERT_TAIL(&m->parked, r, entry);
	m->nparked++;
	arm_park_timer(m);
}

void mirror_dispatch(void *owner, struct conn *c, struct request *r)
{
	struct mirror *m = owner;
	const struct frame *f = &r->frame;
	if (f->type == MT_SUBSCRIBE) {
		if (!m->ready)
			conn_send_error(c, f->id, -EAGAIN,
			                "mirror %s is bootstrapping; subscribe again shortly",
			                m->cfg.site);
		else
			stream_subscribe(m->stream, c, f->id, f->body);
	} else if (f->type == MT_ACK) {
		stream_ack(m->stream, c, f->id, f->body);
	} else if (f->type == MT_SITE_REPORT) {
		char err[300];
		if (site_table_receive(m->sites, f->body, mirror_now_ns(), err, sizeof(err)) < 0)
			log_warn("%s: %s", c->peer, err);
	} else if (f->type == MT_SITES) {
		struct site_report self;
		mirror_site_report(m, &self);
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		site_report_build_reply(&sb, f->id, m->version, &self, m->sites, mirror_now_ns());
		conn_send(c, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
	} else if (c->role == CONN_SUBSCRIBER) {
		conn_send_error(c, f->id, -EPROTO, "%s on a subscribed connection",
		                proto_msg_name(f->type));
	} else if (f->type == MT_CACHE_REGISTER) {
		members_register(m->members, c, f->id, f->body, m->cfg.site);
	} else if (f->type == MT_CACHE_MEMBERS) {
		members_list(m->members, c, f->id, m->cfg.site);
	} else if (f->type == MT_WARMUP_START || f->type == MT_WARMUP_STATUS) {
		warmup_dispatch(m->warm, m->ns, m->version, c, r);
		return;
	} else if (f->type == MT_REPLICATION_STATUS) {
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msg_begin(&sb, &pk, MT_REPLY, f->id, 3);
		msg_pack_key(&pk, "version");
		msgpack_pack_uint64(&pk, m->version);
		msg_pack_key(&pk, "site");
		msg_pack_cstr(&pk, m->cfg.site);
		msg_pack_key(&pk, "rules");
		replication_pack_status(m->repl, &pk);
		msg_end(&sb);
		conn_send(c, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
	} else if (reads_is_read(f->type)) {
		read_request(m, c, r);
		return;
	} else if (reads_is_write(f->type)) {
		conn_send_error(c, f->id, -EROFS,
		                "mirror %s is read-only: send writes to the primary (this mirror's "
		                "upstream is %s)",
		                m->cfg.site, upstream_address(m->up));
	} else {
		conn_send_error(c, f->id, -EPROTO, "unknown message type %u", f->type);
	}
	request_free(r);
}
