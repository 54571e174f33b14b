#include "members.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "msg.h"
#include "proto.h"

struct member {
	struct cache_member m;
	int64_t seen_ns;
};

struct members {
	struct member list[CACHE_MEMBERS_MAX];
	size_t n;
	uint64_t timeout_ms;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct members *members_new(uint64_t timeout_ms)
{
	struct members *ms = calloc(1, sizeof(*ms));
	if (ms != NULL)
		ms->timeout_ms = timeout_ms;
	return ms;
}

void members_free(struct members *ms)
{
	free(ms);
}

void members_set_timeout(struct members *ms, uint64_t timeout_ms)
{
	ms->timeout_ms = timeout_ms;
}

size_t members_count(const struct members *ms)
{
	return ms->n;
}

size_t members_snapshot(const struct members *ms, struct cache_member *out, size_t cap)
{
	size_t n = ms->n < cap ? ms->n : cap;
	for (size_t i = 0; i < n; i++)
		out[i] = ms->list[i].m;
	return n;
}

void members_expire(struct members *ms)
{
	int64_t now = now_ns();
	for (size_t i = 0; i < ms->n;) {
		if (now - ms->list[i].seen_ns > (int64_t)ms->timeout_ms * 1000000) {
			log_warn("cache node %s: no heartbeat for %llu ms, left the group",
			         ms->list[i].m.address, (unsigned long long)ms->timeout_ms);
			ms->list[i] = ms->list[--ms->n];
			continue;
		}
		i++;
	}
}

static void answer(struct members *ms, struct conn *c, uint64_t id, const char *site)
{
	members_expire(ms);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_REPLY, id, 3);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, 0);
	msg_pack_key(&pk, "site");
	msg_pack_cstr(&pk, site);
	msg_pack_key(&pk, "members");
	msgpack_pack_array(&pk, (uint32_t)ms->n);
	int64_t now = now_ns();
	for (size_t i = 0; i < ms->n; i++) {
		struct cache_member m = ms->list[i].m;
		m.age_ms = (uint64_t)(now - ms->list[i].seen_ns) / 1000000;
		cacheproto_pack_member(&pk, &m);
	}
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

void members_register(struct members *ms, struct conn *c, uint64_t id, const msgpack_object *body,
                      const char *site)
{
	if (!c->open_access && c->claims.kind != TOKEN_SITE) {
		conn_send_error(
		    c, id, -EACCES,
		    "CACHE_REGISTER needs a site token (mp-primary token create --site)");
		return;
	}
	struct cache_member m;
	char why[256];
	if (cacheproto_parse_member(body, &m, why, sizeof(why)) < 0) {
		conn_send_error(c, id, -EINVAL, "CACHE_REGISTER: %s", why);
		return;
	}
	size_t i;
	for (i = 0; i < ms->n; i++)
		if (strcmp(ms->list[i].m.address, m.address) == 0)
			break;
	if (i == ms->n) {
		if (ms->n == CACHE_MEMBERS_MAX) {
			conn_send_error(c, id, -E2BIG, "the cache group is full (%d nodes)",
			                CACHE_MEMBERS_MAX);
			return;
		}
		for (size_t k = 0; k < ms->n; k++)
			if (ms->list[k].m.block_size != m.block_size) {
				conn_send_error(
				    c, id, -EINVAL,
				    "block_size %llu differs from the group's %llu (node "
				    "%s): every node of a group uses one block size",
				    (unsigned long long)m.block_size,
				    (unsigned long long)ms->list[k].m.block_size,
				    ms->list[k].m.address);
				return;
			}
		ms->n++;
		log_info("cache node %s joined the group (weight %llu, %s)", m.address,
		         (unsigned long long)m.weight, cacheproto_state_name(m.state));
	}
	ms->list[i].m = m;
	ms->list[i].seen_ns = now_ns();
	answer(ms, c, id, site);
}

void members_list(struct members *ms, struct conn *c, uint64_t id, const char *site)
{
	answer(ms, c, id, site);
}

void members_write_status(struct members *ms, struct json_writer *w)
{
	members_expire(ms);
	int64_t now = now_ns();
	json_begin_array(w);
	for (size_t i = 0; i < ms->n; i++) {
		const struct cache_member *m = &ms->list[i].m;
		json_begin_object(w);
		json_key(w, "address");
		json_string(w, m->address);
		json_key(w, "weight");
		json_uint(w, m->weight);
		json_key(w, "state");
		json_string(w, cacheproto_state_name(m->state));
		json_key(w, "block_size");
		json_uint(w, m->block_size);
		json_key(w, "used");
		json_uint(w, m->used);
		json_key(w, "capacity");
		json_uint(w, m->capacity);
		json_key(w, "hits");
		json_uint(w, m->hits);
		json_key(w, "misses");
		json_uint(w, m->misses);
		json_key(w, "age_ms");
		json_uint(w, (uint64_t)(now - ms->list[i].seen_ns) / 1000000);
		json_end_object(w);
	}
	json_end_array(w);
}

void members_totals(const struct members *ms, uint64_t *ret_used, uint64_t *ret_capacity)
{
	uint64_t used = 0, cap = 0;
	for (size_t i = 0; i < ms->n; i++) {
		used += ms->list[i].m.used;
		cap += ms->list[i].m.capacity;
	}
	*ret_used = used;
	*ret_capacity = cap;
}
