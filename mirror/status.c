/* The admin endpoints of mp-mirror. */
#include <event2/buffer.h>
#include <stdio.h>
#include <string.h>

#include "admin.h"
#include "json.h"
#include "mirror.h"
#include "replication.h"

const char *mirror_state(const struct mirror *m)
{
	enum upstream_state s = upstream_state(m->up);
	if (m->boot_ns != NULL || (!m->ready && s != UPSTREAM_DISCONNECTED))
		return "bootstrapping";
	if (s == UPSTREAM_DISCONNECTED || s == UPSTREAM_CONNECTING)
		return "disconnected";
	return m->version < m->upstream_version ? "catching up" : "live";
}

uint64_t mirror_lag_versions(const struct mirror *m)
{
	return m->upstream_version > m->version ? m->upstream_version - m->version : 0;
}

double mirror_lag_seconds(const struct mirror *m)
{
	int64_t now = mirror_now_ns();
	if (m->behind_since_ns != 0)
		return (double)(now - m->behind_since_ns) / 1e9;
	/* Caught up with what we heard: how current is that? Heartbeats carry
	 * the primary's clock as of which the upstream is current, so an
	 * upstream mirror cut off from the primary shows here too. One beat
	 * comes every interval; silence beyond two is staleness. */
	int64_t fresh = m->fresh_ns ? m->fresh_ns : m->started;
	int64_t since = now - fresh;
	int64_t grace = (int64_t)m->cfg.heartbeat_interval_ms * 2000000;
	return since > grace ? (double)since / 1e9 : 0;
}

int64_t mirror_staleness_ms(const struct mirror *m)
{
	if (m->fresh_ns == 0)
		return -1;
	/* fresh_ns is the primary's clock; a primary clock a little ahead
	 * of ours must not make the state look fresher than current. */
	int64_t since = mirror_now_ns() - m->fresh_ns;
	return since > 0 ? since / 1000000 : 0;
}

uint64_t mirror_primary_version(const struct mirror *m)
{
	/* Before any word from the upstream (a replica loaded from its
	 * journal), the primary is at least where we are. */
	return m->upstream_version > m->version ? m->upstream_version : m->version;
}

static int healthz(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	struct mirror *m = arg;
	*ret_content_type = ADMIN_TEXT_CONTENT_TYPE;
	double lag = mirror_lag_seconds(m);
	if (!m->ready) {
		evbuffer_add_printf(body, "bootstrapping\n");
		return 503;
	}
	if (lag * 1000 > (double)m->cfg.max_lag_ms) {
		evbuffer_add_printf(body, "lagging %.3f s behind the upstream (bound %.3f s)\n",
		                    lag, (double)m->cfg.max_lag_ms / 1000);
		return 503;
	}
	char why[600];
	if (replication_failing(m->repl, why, sizeof(why))) {
		evbuffer_add_printf(body, "degraded: %s\n", why);
		return 503;
	}
	evbuffer_add_printf(body, "ok\n");
	return 200;
}

static int status(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	struct mirror *m = arg;
	struct json_writer w;
	char hex[2 * DIGEST_LEN + 1];
	for (int i = 0; i < DIGEST_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", m->digest[i]);
	json_init(&w, body);
	json_begin_object(&w);
	json_key(&w, "role");
	json_string(&w, "mirror");
	json_key(&w, "site");
	json_string(&w, m->cfg.site);
	json_key(&w, "cluster_id");
	json_string(&w, m->cluster_id);
	json_key(&w, "state");
	json_string(&w, mirror_state(m));
	json_key(&w, "upstream");
	json_string(&w, upstream_address(m->up));
	json_key(&w, "upstream_state");
	json_string(&w, upstream_state_name(upstream_state(m->up)));
	json_key(&w, "applied_version");
	json_uint(&w, m->version);
	json_key(&w, "durable_version");
	json_uint(&w, m->durable);
	json_key(&w, "journal_failing");
	json_bool(&w, m->journal_failing);
	json_key(&w, "upstream_version");
	json_uint(&w, m->upstream_version);
	json_key(&w, "lag_versions");
	json_uint(&w, mirror_lag_versions(m));
	json_key(&w, "lag_seconds");
	json_double(&w, mirror_lag_seconds(m));
	json_key(&w, "digest");
	json_string(&w, hex);
	json_key(&w, "entries");
	json_uint(&w, namespace_count(m->ns));
	json_key(&w, "reconnects");
	json_uint(&w, upstream_reconnects(m->up));
	json_key(&w, "parked_reads");
	json_uint(&w, m->nparked);
	json_key(&w, "connections");
	json_uint(&w, server_connections(m->server));
	json_key(&w, "subscribers");
	stream_write_status(m->stream, &w);
	json_key(&w, "cache_group");
	members_write_status(m->members, &w);
	json_key(&w, "replication");
	replication_write_status(m->repl, &w);
	json_key(&w, "sites");
	site_table_write_json(m->sites, mirror_now_ns(), &w);
	json_key(&w, "warmup");
	warmup_write_status(m->warm, &w);
	json_end_object(&w);
	evbuffer_add(body, "\n", 1);
	*ret_content_type = JSON_CONTENT_TYPE;
	return 200;
}

static int metrics(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	struct mirror *m = arg;
	metric_set(m->m_version, (double)m->version);
	metric_set(m->m_lag_versions, (double)mirror_lag_versions(m));
	metric_set(m->m_lag_seconds, mirror_lag_seconds(m));
	metric_set(m->m_parked, (double)m->nparked);
	metric_set(m->m_entries, (double)namespace_count(m->ns));
	metric_set(m->m_journal_failing, m->journal_failing ? 1.0 : 0.0);
	stream_update_metrics(m->stream);
	replication_update_metrics(m->repl);
	return metrics_handler(m->metrics, body, ret_content_type);
}

int mirror_status_register(struct mirror *m)
{
	if (admin_route(m->admin, "/healthz", healthz, m) < 0 ||
	    admin_route(m->admin, "/status", status, m) < 0 ||
	    admin_route(m->admin, "/metrics", metrics, m) < 0)
		return -1;
	return 0;
}
