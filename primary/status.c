/* The admin endpoints of mp-primary. */
#include <event2/buffer.h>
#include <stdio.h>
#include <string.h>

#include "admin.h"
#include "json.h"
#include "primary.h"
#include "sitereport.h"

static int healthz(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	struct primary *p = arg;
	*ret_content_type = ADMIN_TEXT_CONTENT_TYPE;
	if (committer_store_failing(p->committer)) {
		evbuffer_add_printf(body, "store failing: commits are being retried\n");
		return 503;
	}
	if (p->draining) {
		evbuffer_add_printf(body, "draining\n");
		return 503;
	}
	evbuffer_add_printf(body, "ok\n");
	return 200;
}

static int status(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	struct primary *p = arg;
	struct json_writer w;
	json_init(&w, body);
	json_begin_object(&w);
	json_key(&w, "role");
	json_string(&w, "primary");
	json_key(&w, "cluster_id");
	json_string(&w, p->cluster_id);
	json_key(&w, "version");
	json_uint(&w, p->version);
	char hex[2 * DIGEST_LEN + 1];
	for (int i = 0; i < DIGEST_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", p->digest[i]);
	json_key(&w, "digest");
	json_string(&w, hex);
	json_key(&w, "version_time_ns");
	json_int(&w, p->version_time);
	json_key(&w, "entries");
	json_uint(&w, namespace_count(p->ns));
	json_key(&w, "store");
	json_string(&w, p->store_kind);
	json_key(&w, "store_failing");
	json_bool(&w, committer_store_failing(p->committer));
	json_key(&w, "change_log");
	json_begin_object(&w);
	json_key(&w, "oldest_version");
	json_uint(&w, changelog_store_oldest(p->log));
	json_key(&w, "cached_from_version");
	json_uint(&w, changelog_oldest_cached(p->log));
	json_end_object(&w);
	json_key(&w, "connections");
	json_uint(&w, server_connections(p->server));
	json_key(&w, "queued_writes");
	json_uint(&w, committer_queued(p->committer));
	json_key(&w, "draining");
	json_bool(&w, p->draining);
	json_key(&w, "uptime_seconds");
	json_double(&w, (double)(primary_now_ns() - p->started) / 1e9);
	json_key(&w, "subscribers");
	stream_write_status(p->stream, &w);
	json_key(&w, "sites");
	site_table_write_json(p->sites, primary_now_ns(), &w);
	json_key(&w, "gc");
	gc_write_status(p->gc, &w);
	json_end_object(&w);
	evbuffer_add(body, "\n", 1);
	*ret_content_type = JSON_CONTENT_TYPE;
	return 200;
}

static int metrics(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	struct primary *p = arg;
	stream_update_metrics(p->stream);
	gc_update_metrics(p->gc);
	return metrics_handler(p->metrics, body, ret_content_type);
}

int status_register(struct primary *p)
{
	if (admin_route(p->admin, "/healthz", healthz, p) < 0 ||
	    admin_route(p->admin, "/status", status, p) < 0 ||
	    admin_route(p->admin, "/metrics", metrics, p) < 0)
		return -1;
	return 0;
}
