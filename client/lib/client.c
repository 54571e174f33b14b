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
	pthread_mutex_init(&c->legs_lock, NULL);
	pthread_cond_init(&c->legs_cond, NULL);
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
	if (route_quiesce(c))
		client_destroy(c);
}

void client_destroy(struct mp_client *c)
{
	servers_destroy(c);
	SSL_CTX_free(c->tls.ctx);
	buckets_destroy(c);
	cachegroup_destroy(&c->group);
	pthread_cond_destroy(&c->legs_cond);
	pthread_mutex_destroy(&c->legs_lock);
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
	if (!ch->is_mirror && ch->upload_prefix[0] != '\0')
		snprintf(c->upload_prefix, sizeof(c->upload_prefix), "%s", ch->upload_prefix);
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

int client_ask_primary(struct mp_client *c, mp_error *err)
{
	struct request_body b;
	request_init(&b, MT_VERSION);
	struct reply rep;
	int r = client_primary(c, &b, NULL, &rep, err);
	request_destroy(&b);
	if (r == 0)
		reply_release(&rep);
	return r;
}

void client_set_origin_url(struct mp_client *c, const char *url)
{
	pthread_mutex_lock(&c->lock);
	snprintf(c->origin_url, sizeof(c->origin_url), "%s", url);
	pthread_mutex_unlock(&c->lock);
}

int client_origin_url(struct mp_client *c, char *out, size_t outlen, mp_error *err)
{
	pthread_mutex_lock(&c->lock);
	snprintf(out, outlen, "%s", c->origin_url);
	pthread_mutex_unlock(&c->lock);
	if (out[0] != '\0')
		return 0;
	/* Nobody told us yet: any primary connection brings it. */
	int r = client_ask_primary(c, err);
	if (r < 0)
		return r;
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
