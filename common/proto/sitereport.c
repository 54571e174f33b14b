/* Site reports: see sitereport.h. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"
#include "proto.h"
#include "sitereport.h"

struct site_table {
	struct site_report v[SITEREPORT_MAX];
	size_t n;
};

static const struct {
	const char *key;
	size_t off;
} counters[] = {
    {"version", offsetof(struct site_report, version)},
    {"lag_versions", offsetof(struct site_report, lag_versions)},
    {"lag_ms", offsetof(struct site_report, lag_ms)},
    {"repl_pending_objects", offsetof(struct site_report, repl_pending_objects)},
    {"repl_pending_bytes", offsetof(struct site_report, repl_pending_bytes)},
    {"repl_failing_objects", offsetof(struct site_report, repl_failing_objects)},
    {"cache_nodes", offsetof(struct site_report, cache_nodes)},
    {"cache_used", offsetof(struct site_report, cache_used)},
    {"cache_capacity", offsetof(struct site_report, cache_capacity)},
};
#define N_COUNTERS (sizeof(counters) / sizeof(counters[0]))

static uint64_t *counter(struct site_report *r, size_t i)
{
	return (uint64_t *)((char *)r + counters[i].off);
}

struct site_table *site_table_new(void)
{
	return calloc(1, sizeof(struct site_table));
}

void site_table_free(struct site_table *t)
{
	free(t);
}

static bool name_ok(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f || p[i] == '"' || p[i] == '\\')
			return false;
	return true;
}

static int get_name(const msgpack_object *o, const char *key, bool required, size_t min, char *out,
                    size_t outlen, char *err, size_t errlen)
{
	const char *p;
	size_t n;
	int r = msg_get_bytes(o, key, required, min, outlen - 1, &p, &n, err, errlen);
	if (r < 0)
		return r;
	if (r == 1) {
		out[0] = '\0';
		return 0;
	}
	if (!name_ok(p, n)) {
		snprintf(err, errlen, "field '%s': control or quote characters", key);
		return -EINVAL;
	}
	memcpy(out, p, n);
	out[n] = '\0';
	return 0;
}

int site_report_parse(const msgpack_object *body, struct site_report *out, size_t cap,
                      size_t *ret_n, char *err, size_t errlen)
{
	const msgpack_object_array *a;
	char why[200];
	int r = msg_get_array(body, "reports", true, SITEREPORT_MAX, &a, why, sizeof(why));
	if (r < 0) {
		snprintf(err, errlen, "SITE_REPORT: %s", why);
		return -EINVAL;
	}
	size_t n = 0;
	for (uint32_t i = 0; i < a->size; i++) {
		const msgpack_object *o = &a->ptr[i];
		struct site_report x;
		memset(&x, 0, sizeof(x));
		if (o->type != MSGPACK_OBJECT_MAP) {
			snprintf(err, errlen, "SITE_REPORT: report %u is not a map", i);
			return -EINVAL;
		}
		if (get_name(o, "site", true, 1, x.site, sizeof(x.site), why, sizeof(why)) < 0 ||
		    get_name(o, "upstream", false, 0, x.upstream, sizeof(x.upstream), why,
		             sizeof(why)) < 0 ||
		    get_name(o, "state", false, 0, x.state, sizeof(x.state), why, sizeof(why)) <
		        0) {
			snprintf(err, errlen, "SITE_REPORT: report %u: %s", i, why);
			return -EINVAL;
		}
		for (size_t k = 0; k < N_COUNTERS; k++)
			if (msg_get_u64(o, counters[k].key, false, UINT64_MAX, counter(&x, k), why,
			                sizeof(why)) < 0) {
				snprintf(err, errlen, "SITE_REPORT: report %u: %s", i, why);
				return -EINVAL;
			}
		if (n < cap)
			out[n++] = x;
	}
	*ret_n = n;
	return 0;
}

int site_table_receive(struct site_table *t, const msgpack_object *body, int64_t now_ns, char *err,
                       size_t errlen)
{
	struct site_report *in = malloc(SITEREPORT_MAX * sizeof(*in));
	if (in == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	size_t n = 0;
	int r = site_report_parse(body, in, SITEREPORT_MAX, &n, err, errlen);
	for (size_t i = 0; r == 0 && i < n; i++) {
		size_t k = 0;
		while (k < t->n && strcmp(t->v[k].site, in[i].site) != 0)
			k++;
		if (k == t->n) {
			if (t->n == SITEREPORT_MAX) {
				/* Full: the stalest entry makes room. */
				k = 0;
				for (size_t j = 1; j < t->n; j++)
					if (t->v[j].heard_ns < t->v[k].heard_ns)
						k = j;
			} else {
				t->n++;
			}
		}
		t->v[k] = in[i];
		t->v[k].heard_ns = now_ns;
	}
	free(in);
	return r;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct site_report *)a)->site, ((const struct site_report *)b)->site);
}

size_t site_table_list(const struct site_table *t, int64_t now_ns, struct site_report *out,
                       size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; t != NULL && i < t->n && n < cap; i++)
		if (now_ns - t->v[i].heard_ns <= (int64_t)SITEREPORT_STALE_S * 1000000000)
			out[n++] = t->v[i];
	qsort(out, n, sizeof(*out), by_name);
	return n;
}

static void pack_one(msgpack_packer *pk, const struct site_report *r)
{
	msgpack_pack_map(pk, 3 + N_COUNTERS);
	msg_pack_key(pk, "site");
	msg_pack_cstr(pk, r->site);
	msg_pack_key(pk, "upstream");
	msg_pack_cstr(pk, r->upstream);
	msg_pack_key(pk, "state");
	msg_pack_cstr(pk, r->state);
	for (size_t k = 0; k < N_COUNTERS; k++) {
		msg_pack_key(pk, counters[k].key);
		msgpack_pack_uint64(pk, *counter((struct site_report *)r, k));
	}
}

void site_report_pack(msgpack_packer *pk, const struct site_report *self,
                      const struct site_table *t, int64_t now_ns)
{
	struct site_report *list = malloc(SITEREPORT_MAX * sizeof(*list));
	size_t n = list != NULL ? site_table_list(t, now_ns, list, SITEREPORT_MAX - 1) : 0;
	msg_pack_key(pk, "reports");
	msgpack_pack_array(pk, (uint32_t)(n + (self != NULL)));
	if (self != NULL)
		pack_one(pk, self);
	for (size_t i = 0; i < n; i++)
		pack_one(pk, &list[i]);
	free(list);
}

void site_table_write_json(const struct site_table *t, int64_t now_ns, struct json_writer *w)
{
	struct site_report *list = malloc(SITEREPORT_MAX * sizeof(*list));
	size_t n = list != NULL ? site_table_list(t, now_ns, list, SITEREPORT_MAX) : 0;
	json_begin_array(w);
	for (size_t i = 0; i < n; i++) {
		const struct site_report *r = &list[i];
		json_begin_object(w);
		json_key(w, "site");
		json_string(w, r->site);
		json_key(w, "upstream");
		json_string(w, r->upstream[0] ? r->upstream : "primary");
		json_key(w, "state");
		json_string(w, r->state);
		for (size_t k = 0; k < N_COUNTERS; k++) {
			json_key(w, counters[k].key);
			json_uint(w, *counter((struct site_report *)r, k));
		}
		json_key(w, "heard_ms_ago");
		json_int(w, (now_ns - r->heard_ns) / 1000000);
		json_end_object(w);
	}
	json_end_array(w);
	free(list);
}

void site_report_build_reply(msgpack_sbuffer *sb, uint64_t id, uint64_t version,
                             const struct site_report *self, const struct site_table *t,
                             int64_t now_ns)
{
	msgpack_packer pk;
	msg_begin(sb, &pk, MT_REPLY, id, 2);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, version);
	site_report_pack(&pk, self, t, now_ns);
	msg_end(sb);
}
