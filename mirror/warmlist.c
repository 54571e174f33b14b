/* A warmup pipeline's `list:` file, read by the warmup worker through the
 * site's cache group (the node that owns each block fetches it from the
 * bucket like any other block, with the site's credentials), so the mirror
 * needs no bucket credentials of its own. The loop parses what it read
 * (policy_paths_from_text) and puts the paths in force: see warmup.c. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grant.h"
#include "hrw.h"
#include "internal.h" /* the client library's channels */
#include "msg.h"
#include "proto.h"
#include "warmrun.h"

void warmlist_job_free(struct list_job *j)
{
	if (j == NULL)
		return;
	free(j->obj.bucket);
	free(j->obj.key);
	free(j->obj.etag);
	free(j->text);
	free(j);
}

/* [offset, offset + length) of the object from the first node in HRW order
 * that answers, into out. */
static int read_range(struct warmup *w, const struct cache_member *nodes, size_t n,
                      const struct wobj *o, uint64_t index, uint64_t offset, uint64_t length,
                      char *out, char *why, size_t whylen)
{
	struct block_request req;
	memset(&req, 0, sizeof(req));
	snprintf(req.bucket, sizeof(req.bucket), "%s", o->bucket);
	snprintf(req.key, sizeof(req.key), "%s", o->key);
	snprintf(req.etag, sizeof(req.etag), "%s", o->etag);
	req.size = o->size;
	req.offset = offset;
	req.length = length;
	char grant[GRANT_LEN + 1];
	if (w->secret != NULL && grant_make(w->secret, w->cfg.secret_len, o->bucket, o->key,
	                                    o->etag, (int64_t)time(NULL), 300, grant) == 0) {
		req.grant = grant;
		req.grant_len = strlen(grant);
	}
	uint64_t ids[CACHE_MEMBERS_MAX], weights[CACHE_MEMBERS_MAX];
	size_t order[CACHE_MEMBERS_MAX];
	for (size_t i = 0; i < n; i++) {
		ids[i] = hrw_node_id(nodes[i].address);
		weights[i] = nodes[i].weight;
	}
	struct block_id id = hrw_block_id(o->bucket, o->key, o->etag, index);
	hrw_order(id.lo, ids, weights, n, order);
	struct request_body b;
	request_init(&b, MT_BLOCK_READ);
	b.nfields = cacheproto_pack_block_fields(&b.pk, &req);
	int rc = -ENODATA;
	snprintf(why, whylen, "no cache node at the site");
	for (size_t k = 0; k < n && rc != 0; k++) {
		const char *addr = nodes[order[k]].address;
		struct channel_tls tls = {NULL, NULL};
		struct channel *ch = NULL;
		mp_error err = {0};
		struct reply rep = {0};
		bool sent;
		int r =
		    channel_open(addr, &tls, w->token, NULL, 3000, w->cfg.timeout_ms, &ch, &err);
		if (r == 0)
			r = channel_call(ch, &b, NULL, w->cfg.timeout_ms, &rep, &sent, &err);
		if (r == 0 && rep.is_error) {
			r = rep.error_code;
			snprintf(why, whylen, "%s: %.*s", addr, (int)rep.error_msg_len,
			         rep.error_msg);
		} else if (r == 0) {
			const char *data;
			size_t len = 0;
			char e[200];
			if (msg_get_bytes(rep.frame.body, "data", true, 0, CACHE_BLOCK_MAX, &data,
			                  &len, e, sizeof(e)) != 0 ||
			    len != length) {
				r = -EPROTO;
				snprintf(why, whylen, "%s: a block read answered %s", addr,
				         len != length ? "the wrong number of bytes" : e);
			} else {
				memcpy(out, data, len);
				rc = 0;
			}
		} else {
			snprintf(why, whylen, "%.500s", err.message);
		}
		reply_release(&rep);
		channel_close(ch);
	}
	request_destroy(&b);
	return rc;
}

void warmlist_read(struct warmup *w, struct list_job *j)
{
	const struct wobj *o = &j->obj;
	j->text = malloc(o->length + 1);
	if (j->text == NULL) {
		j->rc = -ENOMEM;
		snprintf(j->error, sizeof(j->error), "out of memory");
		return;
	}
	j->len = 0;
	struct cache_member nodes[CACHE_MEMBERS_MAX];
	size_t n = 0;
	uint64_t bs = 0;
	pthread_mutex_lock(&w->lock);
	for (size_t i = 0; i < w->nmembers; i++) {
		if (bs == 0)
			bs = w->members[i].block_size;
		if (w->members[i].block_size == bs && w->members[i].weight > 0)
			nodes[n++] = w->members[i];
	}
	pthread_mutex_unlock(&w->lock);
	j->rc = 0;
	if (o->length > 0 && (n == 0 || bs == 0)) {
		j->rc = -ENODATA;
		snprintf(j->error, sizeof(j->error),
		         "no cache node at the site to read it through");
	}
	for (uint64_t at = o->offset; j->rc == 0 && at < o->offset + o->length;) {
		uint64_t index = at / bs, end = (index + 1) * bs;
		if (end > o->offset + o->length)
			end = o->offset + o->length;
		j->rc = read_range(w, nodes, n, o, index, at, end - at, j->text + j->len, j->error,
		                   sizeof(j->error));
		j->len += end - at;
		at = end;
	}
	if (j->rc < 0) {
		free(j->text);
		j->text = NULL;
		j->len = 0;
	} else {
		j->text[j->len] = '\0';
	}
}
