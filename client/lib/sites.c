/* The tree of sites, as the primary (or, when it cannot be reached, a
 * mirror, for the sites behind it) knows it from their reports. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "proto.h"
#include "sitereport.h"

MP_EXPORT int mp_sites(mp_client *c, mp_site_info *out, size_t cap, size_t *ret_n, char *ret_from,
                       size_t from_len, mp_error *err)
{
	static const enum mp_consistency order[] = {MP_STRONG, MP_EVENTUAL};
	int r = 0;
	for (size_t attempt = 0; attempt < 2; attempt++) {
		struct request_body b;
		request_init(&b, MT_SITES);
		mp_call call = {.consistency = order[attempt]};
		struct reply rep;
		r = attempt == 0 ? client_primary(c, &b, &call, &rep, err)
		                 : client_read(c, &b, &call, &rep, err);
		request_destroy(&b);
		if (r < 0)
			continue;
		if (rep.is_error) {
			r = client_answer_error(&rep, "sites", err);
			reply_release(&rep);
			continue;
		}
		struct site_report *v = calloc(SITEREPORT_MAX, sizeof(*v));
		size_t n = 0;
		char why[300];
		if (v == NULL) {
			reply_release(&rep);
			return mperr(err, -ENOMEM, "out of memory");
		}
		r = site_report_parse(rep.frame.body, v, SITEREPORT_MAX, &n, why, sizeof(why));
		reply_release(&rep);
		if (r < 0) {
			free(v);
			return mperr(err, -EPROTO, "%s: %s", call.served_by, why);
		}
		for (size_t i = 0; i < n && i < cap; i++) {
			mp_site_info *o = &out[i];
			memset(o, 0, sizeof(*o));
			snprintf(o->site, sizeof(o->site), "%s", v[i].site);
			snprintf(o->upstream, sizeof(o->upstream), "%s", v[i].upstream);
			snprintf(o->state, sizeof(o->state), "%s", v[i].state);
			o->version = v[i].version;
			o->lag_versions = v[i].lag_versions;
			o->lag_ms = v[i].lag_ms;
			o->repl_pending_objects = v[i].repl_pending_objects;
			o->repl_pending_bytes = v[i].repl_pending_bytes;
			o->repl_failing_objects = v[i].repl_failing_objects;
			o->cache_nodes = v[i].cache_nodes;
			o->cache_used = v[i].cache_used;
			o->cache_capacity = v[i].cache_capacity;
		}
		free(v);
		*ret_n = n;
		if (ret_from != NULL)
			snprintf(ret_from, from_len, "%s", call.served_by);
		return 0;
	}
	return r;
}
