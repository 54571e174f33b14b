#include "upstream.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "msg.h"
#include "netaddr.h"
#include "proto.h"
#include "tls.h"

#define UPSTREAM_FRAMES_PER_CALLBACK 64
/* While streaming from a later address of the list, the first one is asked
 * this often whether it is back (and caught up), so a mirror that failed
 * over from its hub to the primary returns to the hub after a heal. */
#define UPSTREAM_PREFER_PROBE_MS 5000
#define UPSTREAM_PROBE_TIMEOUT_S 2
#define UPSTREAM_PROBE_FRAME_MAX 65536

struct upstream {
	struct event_base *base;
	struct upstream_config cfg;
	const struct upstream_ops *ops;
	void *arg;
	struct bufferevent *bev;
	struct event *retry_ev;    /* back-off timer */
	struct event *silence_ev;  /* fires when the upstream said nothing */
	struct event *prefer_ev;   /* time to probe the first address again */
	struct bufferevent *probe; /* HELLO to the first address, or NULL */
	enum upstream_state state;
	size_t addr_index;
	uint64_t backoff_ms;
	uint64_t reconnects;
	bool hello_done;
	bool subscribed;
	bool stopping;
	uint64_t next_id;
	uint64_t hello_id, subscribe_id;
	uint64_t expect_version; /* next change record version, 0 = unknown */
};

const char *upstream_state_name(enum upstream_state s)
{
	switch (s) {
	case UPSTREAM_CONNECTING:
		return "connecting";
	case UPSTREAM_SNAPSHOT:
		return "bootstrapping";
	case UPSTREAM_STREAMING:
		return "streaming";
	default:
		return "disconnected";
	}
}

static void set_state(struct upstream *u, enum upstream_state s)
{
	if (u->state == s)
		return;
	u->state = s;
	if (u->ops->state_changed != NULL)
		u->ops->state_changed(u->arg, s, upstream_address(u));
}

const char *upstream_address(const struct upstream *u)
{
	return u->cfg.naddresses ? u->cfg.addresses[u->addr_index] : "";
}

enum upstream_state upstream_state(const struct upstream *u)
{
	return u->state;
}

uint64_t upstream_reconnects(const struct upstream *u)
{
	return u->reconnects;
}

static void arm_silence(struct upstream *u)
{
	struct timeval tv = {(time_t)(u->cfg.silence_timeout_ms / 1000),
	                     (suseconds_t)(u->cfg.silence_timeout_ms % 1000) * 1000};
	evtimer_add(u->silence_ev, &tv);
}

static void send_frame(struct upstream *u, msgpack_sbuffer *sb)
{
	if (u->bev != NULL)
		bufferevent_write(u->bev, sb->data, sb->size);
}

static void probe_end(struct upstream *u)
{
	if (u->probe != NULL) {
		bufferevent_free(u->probe);
		u->probe = NULL;
	}
}

static void arm_prefer(struct upstream *u)
{
	if (u->addr_index == 0 || u->stopping || u->state != UPSTREAM_STREAMING)
		return;
	struct timeval tv = {UPSTREAM_PREFER_PROBE_MS / 1000,
	                     UPSTREAM_PREFER_PROBE_MS % 1000 * 1000};
	evtimer_add(u->prefer_ev, &tv);
}

static void drop(struct upstream *u, const char *why)
{
	probe_end(u);
	evtimer_del(u->prefer_ev);
	if (u->bev != NULL) {
		bufferevent_free(u->bev);
		u->bev = NULL;
	}
	evtimer_del(u->silence_ev);
	u->hello_done = u->subscribed = false;
	u->expect_version = 0;
	if (u->stopping)
		return;
	if (why != NULL)
		log_warn("upstream %s: %s; reconnecting in %llu ms", upstream_address(u), why,
		         (unsigned long long)u->backoff_ms);
	set_state(u, UPSTREAM_DISCONNECTED);
	u->reconnects++;
	/* Next address; a full round over the list backs off further. */
	u->addr_index = (u->addr_index + 1) % u->cfg.naddresses;
	/* Jitter of +-25% so that many mirrors do not reconnect in step. */
	uint64_t d = u->backoff_ms;
	uint64_t jitter = d / 2 ? (uint64_t)rand() % (d / 2) : 0;
	d = d - d / 4 + jitter;
	struct timeval tv = {(time_t)(d / 1000), (suseconds_t)(d % 1000) * 1000};
	evtimer_add(u->retry_ev, &tv);
	if (u->addr_index == 0) {
		u->backoff_ms *= 2;
		if (u->backoff_ms > u->cfg.backoff_max_ms)
			u->backoff_ms = u->cfg.backoff_max_ms;
	}
}

void upstream_reconnect(struct upstream *u, const char *why)
{
	drop(u, why);
}

static void send_subscribe(struct upstream *u)
{
	uint8_t digest[DIGEST_LEN];
	uint64_t from = u->ops->position(u->arg, digest);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	u->subscribe_id = ++u->next_id;
	msg_begin(&sb, &pk, MT_SUBSCRIBE, u->subscribe_id, from > 0 ? 3 : 2);
	msg_pack_key(&pk, "from");
	msgpack_pack_uint64(&pk, from);
	msg_pack_key(&pk, "site");
	msg_pack_cstr(&pk, u->cfg.site);
	if (from > 0) {
		msg_pack_key(&pk, "digest");
		msg_pack_binn(&pk, digest, DIGEST_LEN);
	}
	msg_end(&sb);
	send_frame(u, &sb);
	msgpack_sbuffer_destroy(&sb);
	u->expect_version = from + 1;
}

static void pack_hello(struct upstream *u, msgpack_sbuffer *sb, uint64_t id)
{
	msgpack_packer pk;
	msg_begin(sb, &pk, MT_HELLO, id, u->cfg.token ? 2 : 1);
	msg_pack_key(&pk, "proto");
	msgpack_pack_uint32(&pk, PROTO_VERSION);
	if (u->cfg.token) {
		msg_pack_key(&pk, "token");
		msg_pack_cstr(&pk, u->cfg.token);
	}
	msg_end(sb);
}

static void send_hello(struct upstream *u)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	u->hello_id = ++u->next_id;
	pack_hello(u, &sb, u->hello_id);
	send_frame(u, &sb);
	msgpack_sbuffer_destroy(&sb);
}

/* The probe's answer: HELLO_OK from the first address at a version at
 * least ours moves the subscription back to it. */
static void probe_read(struct bufferevent *bev, void *arg)
{
	struct upstream *u = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	uint8_t hdr[FRAME_HEADER_LEN];
	if (evbuffer_copyout(in, hdr, sizeof(hdr)) < (ev_ssize_t)sizeof(hdr))
		return;
	uint32_t len =
	    (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (len > UPSTREAM_PROBE_FRAME_MAX) {
		probe_end(u);
		arm_prefer(u);
		return;
	}
	if (evbuffer_get_length(in) < FRAME_HEADER_LEN + (size_t)len)
		return;
	const uint8_t *buf = evbuffer_pullup(in, FRAME_HEADER_LEN + (ev_ssize_t)len);
	struct frame f;
	char err[256];
	uint64_t theirs = 0;
	bool back = false;
	if (frame_decode(buf + FRAME_HEADER_LEN, len, &f, NULL, err, sizeof(err)) == 0) {
		uint8_t digest[DIGEST_LEN];
		uint64_t ours = u->ops->position(u->arg, digest);
		back = f.type == MT_HELLO_OK &&
		       msg_get_u64(f.body, "version", true, UINT64_MAX, &theirs, err,
		                   sizeof(err)) == 0 &&
		       theirs >= ours;
		frame_release(&f);
	}
	probe_end(u);
	if (!back) {
		arm_prefer(u);
		return;
	}
	log_info("upstream %s: the preferred upstream %s answers again at version %llu; "
	         "moving back to it",
	         upstream_address(u), u->cfg.addresses[0], (unsigned long long)theirs);
	/* drop() moves to the next address: the first. */
	u->addr_index = u->cfg.naddresses - 1;
	u->backoff_ms = u->cfg.backoff_min_ms;
	drop(u, NULL);
}

static void probe_event(struct bufferevent *bev, short what, void *arg)
{
	struct upstream *u = arg;
	if (what & BEV_EVENT_CONNECTED) {
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		pack_hello(u, &sb, 1);
		bufferevent_write(bev, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		return;
	}
	probe_end(u); /* refused, timed out or closed: not back yet */
	arm_prefer(u);
}

static void prefer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct upstream *u = arg;
	if (u->addr_index == 0 || u->state != UPSTREAM_STREAMING || u->probe != NULL)
		return;
	struct sockaddr_storage ss;
	socklen_t sslen;
	char *err = NULL;
	if (netaddr_resolve(u->cfg.addresses[0], &ss, &sslen, &err) < 0) {
		free(err);
		arm_prefer(u);
		return;
	}
	u->probe = u->cfg.tls != NULL ? tls_connect(u->base, u->cfg.tls, u->cfg.tls_name)
	                              : bufferevent_socket_new(u->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (u->probe == NULL) {
		arm_prefer(u);
		return;
	}
	struct timeval tv = {UPSTREAM_PROBE_TIMEOUT_S, 0};
	bufferevent_set_timeouts(u->probe, &tv, &tv);
	bufferevent_setcb(u->probe, probe_read, NULL, probe_event, u);
	bufferevent_enable(u->probe, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(u->probe, (struct sockaddr *)&ss, (int)sslen) < 0) {
		probe_end(u);
		arm_prefer(u);
	}
}

/* Returns false when the connection was dropped. */
static bool verdict(struct upstream *u, enum upstream_verdict v, const char *what)
{
	if (v == UPSTREAM_OK)
		return true;
	if (v == UPSTREAM_REBOOTSTRAP)
		u->backoff_ms = u->cfg.backoff_min_ms; /* come back at once */
	drop(u, what);
	return false;
}

/* CHANGES are handled on their raw bytes: each record goes to the owner as
 * it was encoded upstream, to be journaled and re-served as is, and is
 * decoded once (by the owner's apply) instead of three times. */
static bool handle_changes_raw(struct upstream *u, const uint8_t *payload, size_t len)
{
	const uint8_t *arr;
	size_t alen, hdr, pos, used;
	uint32_t n;
	char err[256];
	if (!u->subscribed || u->state == UPSTREAM_SNAPSHOT) {
		drop(u, "CHANGES before the subscription or inside a snapshot");
		return false;
	}
	if (msg_raw_field(payload, len, "versions", &arr, &alen) < 0 ||
	    msg_raw_array(arr, alen, &n, &hdr) < 0) {
		drop(u, "malformed CHANGES frame");
		return false;
	}
	pos = hdr;
	for (uint32_t i = 0; i < n; i++) {
		if (msg_check(arr + pos, alen - pos, MSG_MAX_DEPTH, &used, err, sizeof(err)) < 0) {
			drop(u, err);
			return false;
		}
		const uint8_t *rec = arr + pos;
		pos += used;
		/* The version is the record's first field: [version, ...]. */
		uint32_t fields;
		size_t fh, vused;
		msgpack_unpacked vu;
		if (msg_raw_array(rec, used, &fields, &fh) < 0 || fields != 4 ||
		    msg_check(rec + fh, used - fh, 1, &vused, err, sizeof(err)) < 0 ||
		    msg_unpack(rec + fh, vused, &vu, err, sizeof(err)) < 0) {
			drop(u, "a change record is not [version, time, digest, mutations]");
			return false;
		}
		uint64_t version =
		    vu.data.type == MSGPACK_OBJECT_POSITIVE_INTEGER ? vu.data.via.u64 : 0;
		msgpack_unpacked_destroy(&vu);
		if (u->expect_version != 0 && version != u->expect_version) {
			char why[128];
			snprintf(why, sizeof(why), "sent version %llu where %llu was due (a gap)",
			         (unsigned long long)version,
			         (unsigned long long)u->expect_version);
			drop(u, why);
			return false;
		}
		enum upstream_verdict v = u->ops->apply(u->arg, rec, used);
		if (!verdict(u, v, "a change record was refused"))
			return false;
		u->expect_version = version + 1;
	}
	return true;
}

static bool handle_snapshot(struct upstream *u, const struct frame *f)
{
	char err[256];
	if (f->type == MT_SNAPSHOT_BEGIN) {
		uint64_t version, count, next_ino;
		const char *digest, *cid;
		size_t dlen, clen;
		if (msg_get_u64(f->body, "version", true, UINT64_MAX, &version, err, sizeof(err)) <
		        0 ||
		    msg_get_u64(f->body, "count", true, UINT64_MAX, &count, err, sizeof(err)) < 0 ||
		    msg_get_u64(f->body, "next_ino", true, UINT64_MAX, &next_ino, err,
		                sizeof(err)) < 0 ||
		    msg_get_bytes(f->body, "digest", true, DIGEST_LEN, DIGEST_LEN, &digest, &dlen,
		                  err, sizeof(err)) < 0 ||
		    msg_get_bytes(f->body, "cluster_id", true, 1, CLUSTER_ID_MAX, &cid, &clen, err,
		                  sizeof(err)) < 0) {
			drop(u, err);
			return false;
		}
		char cluster[CLUSTER_ID_MAX + 1];
		snprintf(cluster, sizeof(cluster), "%.*s", (int)clen, cid);
		set_state(u, UPSTREAM_SNAPSHOT);
		u->expect_version = version + 1;
		return verdict(u,
		               u->ops->snapshot_begin(u->arg, version, (const uint8_t *)digest,
		                                      count, next_ino, cluster),
		               "the snapshot was refused");
	}
	if (f->type == MT_SNAPSHOT_CHUNK) {
		const msgpack_object_array *nodes;
		if (u->state != UPSTREAM_SNAPSHOT) {
			drop(u, "SNAPSHOT_CHUNK outside a snapshot");
			return false;
		}
		if (msg_get_array(f->body, "nodes", true, 1u << 24, &nodes, err, sizeof(err)) < 0) {
			drop(u, err);
			return false;
		}
		for (uint32_t i = 0; i < nodes->size; i++) {
			struct node_rec rec;
			if (msg_parse_node(&nodes->ptr[i], &rec, err, sizeof(err)) < 0) {
				drop(u, err);
				return false;
			}
			if (!verdict(u, u->ops->snapshot_node(u->arg, &rec),
			             "a snapshot node was refused"))
				return false;
		}
		return true;
	}
	uint64_t version, count;
	if (u->state != UPSTREAM_SNAPSHOT) {
		drop(u, "SNAPSHOT_END outside a snapshot");
		return false;
	}
	if (msg_get_u64(f->body, "version", true, UINT64_MAX, &version, err, sizeof(err)) < 0 ||
	    msg_get_u64(f->body, "count", true, UINT64_MAX, &count, err, sizeof(err)) < 0) {
		drop(u, err);
		return false;
	}
	if (!verdict(u, u->ops->snapshot_end(u->arg, version, count), "the snapshot did not check"))
		return false;
	set_state(u, UPSTREAM_STREAMING);
	arm_prefer(u);
	return true;
}

static bool handle_error(struct upstream *u, const struct frame *f)
{
	const char *code = "?", *msg = "";
	size_t clen = 1, mlen = 0;
	char err[64];
	msg_get_bytes(f->body, "code", false, 1, 32, &code, &clen, err, sizeof(err));
	msg_get_bytes(f->body, "message", false, 0, 1024, &msg, &mlen, err, sizeof(err));
	char why[1200];
	snprintf(why, sizeof(why), "refused: %.*s %.*s", (int)clen, code, (int)mlen, msg);
	if (f->id == u->subscribe_id && clen == 6 && memcmp(code, "ESTALE", 6) == 0) {
		/* We claim a version the upstream does not have. */
		u->ops->diverged(u->arg, why);
		u->backoff_ms = u->cfg.backoff_min_ms;
	} else if (f->id == u->hello_id && clen == 5 && memcmp(code, "EPERM", 5) == 0) {
		u->ops->diverged(u->arg, why);
	}
	drop(u, why);
	return false;
}

static bool handle_frame(struct upstream *u, const struct frame *f)
{
	char err[256];
	switch (f->type) {
	case MT_HELLO_OK: {
		if (u->hello_done || f->id != u->hello_id) {
			drop(u, "unexpected HELLO_OK");
			return false;
		}
		const char *cid;
		size_t clen;
		if (msg_get_bytes(f->body, "cluster_id", true, 1, CLUSTER_ID_MAX, &cid, &clen, err,
		                  sizeof(err)) < 0) {
			drop(u, err);
			return false;
		}
		/* Passed on to our own clients as is: only its shape is
		 * checked here, so a scheme this mirror does not know yet
		 * does not stop replication. Older upstreams send none. */
		const char *org = "";
		size_t olen = 0;
		if (msg_get_bytes(f->body, "origin", false, 0, ORIGIN_MAX, &org, &olen, err,
		                  sizeof(err)) < 0) {
			char why[300];
			snprintf(why, sizeof(why), "HELLO_OK: %s", err);
			drop(u, why);
			return false;
		}
		for (size_t i = 0; i < olen; i++)
			if ((unsigned char)org[i] < 0x20 || org[i] == 0x7f) {
				drop(u, "HELLO_OK: field 'origin' holds a control byte");
				return false;
			}
		char cluster[CLUSTER_ID_MAX + 1];
		snprintf(cluster, sizeof(cluster), "%.*s", (int)clen, cid);
		char origin[ORIGIN_MAX + 1];
		snprintf(origin, sizeof(origin), "%.*s", (int)olen, org);
		u->ops->hello_ok(u->arg, cluster, origin);
		u->hello_done = true;
		send_subscribe(u);
		return true;
	}
	case MT_REPLY:
		if (f->id != u->subscribe_id || u->subscribed) {
			drop(u, "unexpected REPLY");
			return false;
		}
		u->subscribed = true;
		u->backoff_ms = u->cfg.backoff_min_ms;
		uint64_t upv = 0;
		bool snapshot = false;
		msg_get_u64(f->body, "version", false, UINT64_MAX, &upv, err, sizeof(err));
		msg_get_bool(f->body, "snapshot", false, &snapshot, err, sizeof(err));
		set_state(u, snapshot ? UPSTREAM_SNAPSHOT : UPSTREAM_STREAMING);
		arm_prefer(u);
		u->ops->subscribed(u->arg, upv, snapshot);
		return true;
	case MT_ERROR:
		return handle_error(u, f);
	case MT_HEARTBEAT: {
		uint64_t v;
		int64_t t;
		if (msg_get_u64(f->body, "version", true, UINT64_MAX, &v, err, sizeof(err)) < 0 ||
		    msg_get_i64(f->body, "time", true, &t, err, sizeof(err)) < 0) {
			drop(u, err);
			return false;
		}
		if (u->ops->heartbeat != NULL)
			u->ops->heartbeat(u->arg, v, t);
		return true;
	}
	case MT_SNAPSHOT_BEGIN:
	case MT_SNAPSHOT_CHUNK:
	case MT_SNAPSHOT_END:
		if (!u->subscribed) {
			drop(u, "snapshot before the subscription");
			return false;
		}
		return handle_snapshot(u, f);
	default: {
		char why[64];
		snprintf(why, sizeof(why), "unexpected %s from upstream", proto_msg_name(f->type));
		drop(u, why);
		return false;
	}
	}
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct upstream *u = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	arm_silence(u);
	for (int n = 0; n < UPSTREAM_FRAMES_PER_CALLBACK && u->bev == bev; n++) {
		uint8_t hdr[FRAME_HEADER_LEN];
		if (evbuffer_copyout(in, hdr, sizeof(hdr)) < (ev_ssize_t)sizeof(hdr))
			break;
		uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
		               (uint32_t)hdr[2] << 8 | hdr[3];
		if (len > u->cfg.max_frame_bytes) {
			char why[96];
			snprintf(why, sizeof(why), "frame of %u bytes exceeds the limit of %llu",
			         len, (unsigned long long)u->cfg.max_frame_bytes);
			drop(u, why);
			return;
		}
		if (evbuffer_get_length(in) < FRAME_HEADER_LEN + (size_t)len)
			break;
		const uint8_t *buf = evbuffer_pullup(in, FRAME_HEADER_LEN + (ev_ssize_t)len);
		if (len >= 2 && buf[FRAME_HEADER_LEN] == 0x93 &&
		    buf[FRAME_HEADER_LEN + 1] == MT_CHANGES) {
			bool ok = handle_changes_raw(u, buf + FRAME_HEADER_LEN, len);
			if (!ok || u->bev != bev)
				return;
			evbuffer_drain(in, FRAME_HEADER_LEN + (size_t)len);
			continue;
		}
		struct frame f;
		char err[256];
		if (frame_decode(buf + FRAME_HEADER_LEN, len, &f, NULL, err, sizeof(err)) < 0) {
			char why[300];
			snprintf(why, sizeof(why), "malformed frame: %s", err);
			drop(u, why);
			return;
		}
		bool ok = handle_frame(u, &f);
		frame_release(&f);
		if (!ok || u->bev != bev)
			return;
		evbuffer_drain(in, FRAME_HEADER_LEN + (size_t)len);
	}
	/* Come back on the next loop turn only for a whole frame: half a
	 * frame waits for the socket (and the silence timer). */
	if (u->bev == bev && evbuffer_get_length(in) >= FRAME_HEADER_LEN) {
		uint8_t hdr[FRAME_HEADER_LEN];
		evbuffer_copyout(in, hdr, sizeof(hdr));
		uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
		               (uint32_t)hdr[2] << 8 | hdr[3];
		if (evbuffer_get_length(in) >= FRAME_HEADER_LEN + (size_t)len)
			bufferevent_trigger(bev, EV_READ,
			                    BEV_TRIG_DEFER_CALLBACKS | BEV_TRIG_IGNORE_WATERMARKS);
	}
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct upstream *u = arg;
	if (what & BEV_EVENT_CONNECTED) {
		int one = 1;
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		log_info("upstream %s: connected", upstream_address(u));
		arm_silence(u);
		send_hello(u);
		return;
	}
	char why[256];
	if (what & BEV_EVENT_EOF)
		snprintf(why, sizeof(why), "closed the connection");
	else if (u->cfg.tls != NULL && tls_error(bev, why, sizeof(why)) != NULL && why[0] != '\0')
		;
	else
		snprintf(why, sizeof(why), "%s", strerror(EVUTIL_SOCKET_ERROR()));
	drop(u, why);
}

static void silence_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *u = arg;
	char why[96];
	snprintf(why, sizeof(why), "silent for %llu ms (hung?)",
	         (unsigned long long)u->cfg.silence_timeout_ms);
	drop(u, why);
}

static void connect_now(struct upstream *u)
{
	const char *addr = upstream_address(u);
	struct sockaddr_storage ss;
	socklen_t sslen;
	char *err = NULL;
	if (netaddr_resolve(addr, &ss, &sslen, &err) < 0) {
		char why[300];
		snprintf(why, sizeof(why), "cannot resolve: %s", err ? err : addr);
		free(err);
		drop(u, why);
		return;
	}
	if (u->cfg.tls != NULL)
		u->bev = tls_connect(u->base, u->cfg.tls, u->cfg.tls_name);
	else
		u->bev = bufferevent_socket_new(u->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (u->bev == NULL) {
		drop(u, "cannot create a connection");
		return;
	}
	bufferevent_setcb(u->bev, read_cb, NULL, event_cb, u);
	bufferevent_enable(u->bev, EV_READ | EV_WRITE);
	set_state(u, UPSTREAM_CONNECTING);
	arm_silence(u);
	if (bufferevent_socket_connect(u->bev, (struct sockaddr *)&ss, (int)sslen) < 0)
		drop(u, strerror(errno));
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	connect_now(arg);
}

struct upstream *upstream_new(struct event_base *base, const struct upstream_config *cfg,
                              const struct upstream_ops *ops, void *arg)
{
	struct upstream *u = calloc(1, sizeof(*u));
	if (u == NULL)
		return NULL;
	u->base = base;
	u->cfg = *cfg;
	u->ops = ops;
	u->arg = arg;
	u->backoff_ms = cfg->backoff_min_ms ? cfg->backoff_min_ms : 100;
	u->retry_ev = evtimer_new(base, retry_cb, u);
	u->silence_ev = evtimer_new(base, silence_cb, u);
	u->prefer_ev = evtimer_new(base, prefer_cb, u);
	srand((unsigned)time(NULL) ^ (unsigned)(uintptr_t)u);
	return u;
}

void upstream_free(struct upstream *u)
{
	if (u == NULL)
		return;
	u->stopping = true;
	drop(u, NULL);
	event_free(u->retry_ev);
	event_free(u->silence_ev);
	event_free(u->prefer_ev);
	free(u);
}

void upstream_start(struct upstream *u)
{
	if (u->cfg.naddresses > 0)
		connect_now(u);
}

void upstream_send(struct upstream *u, msgpack_sbuffer *sb)
{
	if (u->bev != NULL && u->subscribed)
		send_frame(u, sb);
}

void upstream_ack(struct upstream *u, uint64_t version)
{
	if (u->bev == NULL || !u->subscribed)
		return;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_ACK, 0, 1);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, version);
	msg_end(&sb);
	send_frame(u, &sb);
	msgpack_sbuffer_destroy(&sb);
}
