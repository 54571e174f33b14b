/* Read requests (VERSION, LOOKUP, GETATTR, RESOLVE, READDIR) answered from
 * a namespace at a version, with a token's view applied. Shared by the
 * primary (at its durable version) and mirrors (at their applied one). */
#ifndef MP_READS_H
#define MP_READS_H

#include <stdbool.h>
#include <stdint.h>

#include "namespace.h"
#include "server.h"

/* What VERSION reports besides the version, so a client can choose
 * between a mirror and the primary. */
struct read_view {
	const struct namespace *ns;
	uint64_t version;
	const char *cluster_id;
	const char *role;         /* "primary", "mirror" */
	const char *site;         /* a mirror's; NULL at the primary (not sent) */
	int64_t staleness_ms;     /* since the state was known current; -1 unknown */
	uint64_t primary_version; /* the newest primary version known */
	const uint8_t *secret;    /* the cluster secret: nodes carry read grants; NULL: none */
	size_t secret_len;
	/* At a mirror that replicates: the site bucket alias holding a
	 * verified copy of the object, or NULL. A file's node then comes with
	 * replicas: [alias or nil per extent], and readers use a site copy
	 * only where one is named. NULL: no replicas. */
	const char *(*replica_of)(void *arg, const char *bucket, const char *key, const char *etag);
	void *replica_arg;
};

bool reads_is_read(uint32_t type);
bool reads_is_write(uint32_t type);
void reads_answer(const struct read_view *v, struct conn *c, uint32_t type, uint64_t id,
                  const msgpack_object *body);

#endif
