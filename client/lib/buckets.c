/* Bucket aliases to object stores: each alias resolves, through the site
 * configuration (or, for the origin, what the primary announces), to a URL,
 * an endpoint and credentials, and keeps a pool of object-store handles (one
 * handle serves one thread at a time). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int buckets_init(struct mp_client *c, mp_error *err)
{
	const struct mp_config *cfg = &c->cfg;
	if (cfg->origin == NULL || site_config_check_alias(cfg->origin, strlen(cfg->origin)) < 0)
		return mperr(err, -EINVAL, "origin '%s': not a bucket alias",
		             cfg->origin ? cfg->origin : "");
	for (size_t i = 0; i < cfg->nbuckets; i++) {
		const struct bucket_config *bc = &cfg->buckets[i];
		const char *alias = cfg->bucket_alias[i];
		if (bc->url == NULL && strcmp(alias, cfg->origin) != 0)
			return mperr(err, -EINVAL, "bucket '%s' has no url (buckets.%s.url)", alias,
			             alias);
		if (bc->url != NULL && strncmp(bc->url, "s3://", 5) != 0 &&
		    strncmp(bc->url, "file:///", 8) != 0)
			return mperr(
			    err, -EINVAL,
			    "buckets.%s.url '%s': want s3://BUCKET[/PREFIX] or file:///DIR", alias,
			    bc->url);
		if (bc->replica != NULL && site_config_bucket(cfg, bc->replica) < 0)
			return mperr(
			    err, -EINVAL,
			    "buckets.%s.replica names '%s', which is not a configured bucket",
			    alias, bc->replica);
		if ((bc->access_key == NULL) != (bc->secret_key == NULL))
			return mperr(err, -EINVAL,
			             "buckets.%s: set both access_key and secret_key, or neither",
			             alias);
	}
	for (size_t i = 0; i < cfg->nbuckets; i++) {
		struct bucket *b = &c->buckets[c->nbuckets++];
		snprintf(b->alias, sizeof(b->alias), "%s", cfg->bucket_alias[i]);
		b->config_index = (int)i;
		pthread_mutex_init(&b->lock, NULL);
	}
	if (site_config_bucket(cfg, cfg->origin) < 0) {
		struct bucket *b = &c->buckets[c->nbuckets++];
		snprintf(b->alias, sizeof(b->alias), "%s", cfg->origin);
		b->config_index = -1;
		pthread_mutex_init(&b->lock, NULL);
	}
	return 0;
}

void buckets_destroy(struct mp_client *c)
{
	for (size_t i = 0; i < c->nbuckets; i++) {
		struct bucket *b = &c->buckets[i];
		for (int k = 0; k < b->nidle; k++)
			objstore_free(b->idle[k]);
		pthread_mutex_destroy(&b->lock);
	}
	c->nbuckets = 0;
}

int buckets_error(mp_error *err, int rc, const struct objstore_error *oe)
{
	return mperr(err, rc, "%s", oe->message[0] ? oe->message : mperr_name(rc));
}

static const char *env_or(const char *v, const char *name)
{
	if (v != NULL)
		return v;
	const char *e = getenv(name);
	return e != NULL && e[0] != '\0' ? e : NULL;
}

static int open_store(struct mp_client *c, struct bucket *b, struct objstore **ret, mp_error *err)
{
	const struct bucket_config *bc =
	    b->config_index >= 0 ? &c->cfg.buckets[b->config_index] : NULL;
	char url[ORIGIN_URL_MAX];
	if (bc != NULL && bc->url != NULL) {
		snprintf(url, sizeof(url), "%s", bc->url);
	} else {
		int r = client_origin_url(c, url, sizeof(url), err);
		if (r < 0)
			return r;
	}
	struct objstore_options opt = {
	    .endpoint = env_or(bc ? bc->endpoint : NULL, "AWS_ENDPOINT_URL"),
	    .region = env_or(bc ? bc->region : NULL, "AWS_REGION"),
	    .access_key = env_or(bc ? bc->access_key : NULL, "AWS_ACCESS_KEY_ID"),
	    .secret_key = env_or(bc ? bc->secret_key : NULL, "AWS_SECRET_ACCESS_KEY"),
	    .path_style = bc ? bc->path_style : true,
	    .connect_timeout_ms = (unsigned)c->cfg.connect_timeout_ms,
	    .part_size = (size_t)c->cfg.part_size,
	    .parallel_parts = (int)(c->cfg.parallel < 64 ? c->cfg.parallel : 64),
	};
	if ((opt.access_key == NULL) != (opt.secret_key == NULL))
		opt.access_key = opt.secret_key = NULL;
	struct objstore_error oe = {0};
	int r = objstore_open(url, &opt, ret, &oe);
	if (r < 0)
		return mperr(err, r, "bucket '%s' (%s): %s", b->alias, url, oe.message);
	return 0;
}

static struct bucket *find(struct mp_client *c, const char *alias)
{
	for (size_t i = 0; i < c->nbuckets; i++)
		if (strcmp(c->buckets[i].alias, alias) == 0)
			return &c->buckets[i];
	return NULL;
}

int buckets_acquire(struct mp_client *c, const char *alias, bool replica, struct bucket **ret_b,
                    struct objstore **ret_st, mp_error *err)
{
	struct bucket *b = find(c, alias);
	if (b == NULL)
		return mperr(err, -ENOENT,
		             "unknown bucket alias '%s': add buckets.%s.url (and its endpoint and "
		             "credentials) to the site configuration",
		             alias, alias);
	if (replica) {
		const struct bucket_config *bc =
		    b->config_index >= 0 ? &c->cfg.buckets[b->config_index] : NULL;
		if (bc == NULL || bc->replica == NULL) {
			*ret_b = NULL;
			*ret_st = NULL;
			return 0;
		}
		b = find(c, bc->replica);
		if (b == NULL)
			return mperr(err, -ENOENT, "unknown replica bucket '%s'", bc->replica);
	}
	pthread_mutex_lock(&b->lock);
	struct objstore *st = b->nidle > 0 ? b->idle[--b->nidle] : NULL;
	pthread_mutex_unlock(&b->lock);
	if (st == NULL) {
		int r = open_store(c, b, &st, err);
		if (r < 0)
			return r;
	}
	*ret_b = b;
	*ret_st = st;
	return 0;
}

void buckets_release(struct bucket *b, struct objstore *st)
{
	if (b == NULL || st == NULL)
		return;
	pthread_mutex_lock(&b->lock);
	if (b->nidle < POOL_MAX) {
		b->idle[b->nidle++] = st;
		st = NULL;
	}
	pthread_mutex_unlock(&b->lock);
	objstore_free(st);
}
