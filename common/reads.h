/* Read requests (VERSION, LOOKUP, GETATTR, RESOLVE, READDIR) answered from
 * a namespace at a version, with a token's view applied. Shared by the
 * primary (at its durable version) and mirrors (at their applied one). */
#ifndef MP_READS_H
#define MP_READS_H

#include <stdbool.h>
#include <stdint.h>

#include "namespace.h"
#include "server.h"

struct read_view {
	const struct namespace *ns;
	uint64_t version;
	const char *cluster_id;
};

bool reads_is_read(uint32_t type);
bool reads_is_write(uint32_t type);
void reads_answer(const struct read_view *v, struct conn *c, uint32_t type, uint64_t id,
                  const msgpack_object *body);

#endif
