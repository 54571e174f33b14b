/* Site reports: every mirror tells its upstream, once a heartbeat, how it
 * and the sites cascaded behind it are doing (SITE_REPORT on the
 * subscription), so that the primary's /status and `mp status` show the
 * whole tree of sites. A table keeps the newest report of each site. */
#ifndef MP_SITEREPORT_H
#define MP_SITEREPORT_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "json.h"

#define SITEREPORT_MAX     256 /* sites in one report, and in a table */
#define SITEREPORT_NAME    63
#define SITEREPORT_STALE_S 30 /* a site not heard of for this long is left out */

struct site_report {
	char site[SITEREPORT_NAME + 1];
	char upstream[SITEREPORT_NAME + 1]; /* the site it streams from; "" = the primary */
	char state[16];                     /* the mirror's state: live, catching-up, ... */
	uint64_t version;
	uint64_t lag_versions;
	uint64_t lag_ms;
	uint64_t repl_pending_objects, repl_pending_bytes, repl_failing_objects;
	uint64_t cache_nodes, cache_used, cache_capacity;
	int64_t heard_ns; /* when this table last heard of it (local clock) */
};

struct site_table;

struct site_table *site_table_new(void);
void site_table_free(struct site_table *t); /* NULL-safe */
/* Takes a report's entries; returns 0 or -EINVAL with the reason in err
 * (nothing is taken from a report that does not parse). */
int site_table_receive(struct site_table *t, const msgpack_object *body, int64_t now_ns, char *err,
                       size_t errlen);
/* The fresh entries, at most cap, in site name order. */
size_t site_table_list(const struct site_table *t, int64_t now_ns, struct site_report *out,
                       size_t cap);

/* Packs {reports: [...]} with self first (when not NULL), then the fresh
 * entries of t (when not NULL). Returns the map's field count (1). */
void site_report_pack(msgpack_packer *pk, const struct site_report *self,
                      const struct site_table *t, int64_t now_ns);
/* Parses {reports: [...]} into out (at most cap); *ret_n gets how many. */
int site_report_parse(const msgpack_object *body, struct site_report *out, size_t cap,
                      size_t *ret_n, char *err, size_t errlen);
/* Builds the REPLY frame to SITES: {version, reports: [self?, the table's
 * fresh entries]}, into sb (initialised by the caller). */
void site_report_build_reply(msgpack_sbuffer *sb, uint64_t id, uint64_t version,
                             const struct site_report *self, const struct site_table *t,
                             int64_t now_ns);
/* "sites": [...] for /status. */
void site_table_write_json(const struct site_table *t, int64_t now_ns, struct json_writer *w);

#endif
