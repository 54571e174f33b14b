/* The client handle and request routing: reads at the first healthy mirror
 * with the call's consistency, falling back to the primaries; writes at the
 * first primary that answers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "internal.h"
#include "proto.h"
#include "tls.h"

int servers_add_configured(struct mp_client *c, mp_error *err);

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void init_curl(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* The TLS context every connection of the handle uses. */
static int open_tls(struct mp_client *c, mp_error *err)
{
	if ((c->cfg.tls_cert == NULL) != (c->cfg.tls_key == NULL))
		return mperr(err, -EINVAL, "tls.cert and tls.key go together");
	struct tls_config tc = {
	    .cert_file = c->cfg.tls_cert, .key_file = c->cfg.tls_key, .ca_file = c->cfg.tls_ca};
	char *why = NULL;
	c->tls.ctx = tls_client_ctx(&tc, NULL, &why);
	if (c->tls.ctx == NULL) {
		int r = mperr(err, -EINVAL, "%s", why ? why : "tls: cannot set up");
		free(why);
		return r;
	}
	c->tls.server_name = c->cfg.tls_server_name;
	return 0;
}

MP_EXPORT int mp_client_open(const mp_config *cfg, mp_client **ret, mp_error *err)
{
	if (cfg == NULL)
		return mperr(err, -EINVAL, "no configuration");
	pthread_once(&curl_once, init_curl);
	if (curl_init_result != CURLE_OK)
		return mperr(err, -EIO, "libcurl: %s", curl_easy_strerror(curl_init_result));
	struct mp_client *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return mperr(err, -ENOMEM, "out of memory");
	if (site_config_copy(&c->cfg, cfg) < 0) {
		free(c);
		return mperr(err, -ENOMEM, "out of memory");
	}
	if (c->cfg.session_file != NULL && strcmp(c->cfg.session_file, "-") == 0) {
		free(c->cfg.session_file); /* "-": no session file */
		c->cfg.session_file = NULL;
	}
	c->consistency = (enum mp_consistency)(MP_SESSION + c->cfg.consistency);
	c->max_staleness_ms = c->cfg.max_staleness_ms;
	pthread_mutex_init(&c->lock, NULL);
	servers_init(c);
	cachegroup_init(&c->group, NULL);
	int r = servers_add_configured(c, err);
	if (r == 0 && c->cfg.tls_enabled)
		r = open_tls(c, err);
	if (r == 0)
		r = buckets_init(c, err);
	if (r < 0) {
		mp_client_close(c);
		return r;
	}
	*ret = c;
	return 0;
}

MP_EXPORT void mp_client_close(mp_client *c)
{
	if (c == NULL)
		return;
	session_save(c, NULL);
	servers_destroy(c);
	SSL_CTX_free(c->tls.ctx);
	buckets_destroy(c);
	cachegroup_destroy(&c->group);
	pthread_mutex_destroy(&c->lock);
	site_config_release(&c->cfg);
	free(c);
}

MP_EXPORT int mp_client_set_consistency(mp_client *c, enum mp_consistency level,
                                        uint64_t max_staleness_ms)
{
	if (level < MP_SESSION || level > MP_EVENTUAL)
		return -EINVAL;
	c->consistency = level;
	if (max_staleness_ms != 0)
		c->max_staleness_ms = max_staleness_ms;
	return 0;
}

MP_EXPORT uint64_t mp_client_session_version(mp_client *c)
{
	return atomic_load(&c->session);
}

MP_EXPORT int mp_client_save_session(mp_client *c, mp_error *err)
{
	return session_save(c, err);
}

void client_session_bump(struct mp_client *c, uint64_t version)
{
	uint64_t cur = atomic_load(&c->session);
	while (version > cur && !atomic_compare_exchange_weak(&c->session, &cur, version))
		;
}

/* What a new channel taught us: the cluster (pinned from now on, and the
 * session file read for it) and the origin bucket. */
void client_learn(struct mp_client *c, const struct channel *ch)
{
	pthread_mutex_lock(&c->lock);
	if (c->cluster_id[0] == '\0' && ch->cluster_id[0] != '\0') {
		snprintf(c->cluster_id, sizeof(c->cluster_id), "%s", ch->cluster_id);
		session_load(c);
	}
	if (ch->origin[0] != '\0' && (!ch->is_mirror || c->origin_url[0] == '\0'))
		snprintf(c->origin_url, sizeof(c->origin_url), "%s", ch->origin);
	pthread_mutex_unlock(&c->lock);
}

enum mp_consistency client_level(const struct mp_client *c, const mp_call *call)
{
	if (call != NULL && call->consistency >= MP_SESSION && call->consistency <= MP_EVENTUAL)
		return call->consistency;
	return c->consistency;
}

int client_answer_error(const struct reply *r, const char *what, mp_error *err)
{
	int len = (int)(r->error_msg_len > 400 ? 400 : r->error_msg_len);
	if (what != NULL && what[0] != '\0')
		return mperr(err, r->error_code, "%s: %s: %.*s", what, mperr_name(r->error_code),
		             len, r->error_msg);
	return mperr(err, r->error_code, "%s: %.*s", mperr_name(r->error_code), len, r->error_msg);
}

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

enum attempt { ATTEMPT_ANSWERED, ATTEMPT_FAILED, ATTEMPT_UNKNOWN };

/* One request at one server, with one retry on a fresh connection when a
 * pooled one turns out dead before the request reached the server (a
 * restarted server). */
static enum attempt attempt(struct mp_client *c, struct server_entry *s,
                            const struct request_body *b, const struct read_fields *rf,
                            uint64_t timeout_ms, struct reply *ret, mp_error *err)
{
	for (int tries = 0; tries < 2; tries++) {
		struct channel *ch;
		bool pooled, sent;
		if (servers_get_channel(c, s, &ch, &pooled, err) < 0)
			return ATTEMPT_FAILED;
		int r = channel_call(ch, b, rf, timeout_ms, ret, &sent, err);
		if (r == 0) {
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
	for (size_t i = 0; !known && i < c->servers.n; i++) {
		struct server_entry *s = c->servers.entries[i];
		if (!servers_routable(s))
			continue;
		struct channel *ch;
		bool pooled;
		mp_error e;
		if (servers_is_down(s))
			continue;
		if (servers_get_channel(c, s, &ch, &pooled, &e) < 0) {
			servers_mark_down(c, s, 0, 0, "%s", e.message);
			continue;
		}
		servers_put_channel(s, ch);
		known = true;
	}
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
			enum attempt a = attempt(c, s, b, mirror ? &rf : NULL, timeout, ret, &last);
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
			enum attempt a = attempt(c, s, b, NULL, c->cfg.timeout_ms, ret, &last);
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

int client_origin_url(struct mp_client *c, char *out, size_t outlen, mp_error *err)
{
	pthread_mutex_lock(&c->lock);
	snprintf(out, outlen, "%s", c->origin_url);
	pthread_mutex_unlock(&c->lock);
	if (out[0] != '\0')
		return 0;
	/* Nobody told us yet: any primary connection brings it. */
	struct request_body b;
	request_init(&b, MT_VERSION);
	struct reply rep;
	int r = client_primary(c, &b, NULL, &rep, err);
	request_destroy(&b);
	if (r < 0)
		return r;
	reply_release(&rep);
	pthread_mutex_lock(&c->lock);
	snprintf(out, outlen, "%s", c->origin_url);
	pthread_mutex_unlock(&c->lock);
	if (out[0] == '\0')
		return mperr(err, -ENOENT,
		             "bucket alias '%s' has no URL: the primary announces none; set "
		             "buckets.%s.url in the site configuration",
		             c->cfg.origin, c->cfg.origin);
	return 0;
}
