/* A site's cache group as its mirror keeps it: mp-cache nodes register
 * (CACHE_REGISTER) every heartbeat; a node silent for member_timeout is
 * dropped; CACHE_MEMBERS hands the list to clients and to the nodes
 * themselves. Runs on the mirror's event loop. */
#ifndef MP_MIRROR_MEMBERS_H
#define MP_MIRROR_MEMBERS_H

#include <stdint.h>

#include "cacheproto.h"
#include "json.h"
#include "server.h"

struct members;

struct members *members_new(uint64_t timeout_ms);
void members_free(struct members *ms);
void members_set_timeout(struct members *ms, uint64_t timeout_ms);
/* CACHE_REGISTER from conn c: records the node and answers with the list. */
void members_register(struct members *ms, struct conn *c, uint64_t id, const msgpack_object *body,
                      const char *site);
/* CACHE_MEMBERS: answers with the list. */
void members_list(struct members *ms, struct conn *c, uint64_t id, const char *site);
/* Drops nodes not heard from in time. */
void members_expire(struct members *ms);
size_t members_count(const struct members *ms);
/* Bytes used and capacity over the group. */
void members_totals(const struct members *ms, uint64_t *ret_used, uint64_t *ret_capacity);
/* Copies up to cap members into out; returns how many. */
size_t members_snapshot(const struct members *ms, struct cache_member *out, size_t cap);
void members_write_status(struct members *ms, struct json_writer *w);

#endif
