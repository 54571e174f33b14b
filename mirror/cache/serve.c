/* Block reads at a cache node: a hit is checked against its checksum and
 * sent from the page cache with sendfile; a miss joins the fill of its
 * block. Answers go out in request order per connection only as far as the
 * protocol needs: every answer carries its request's id. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cachenode.h"
#include "grant.h"
#include "hrw.h"
#include "log.h"
#include "msg.h"
#include "proto.h"

/* REPLY {version, length, source, data: bin32 of length}: the header, with
 * the frame length counting the bytes that follow it. */
static void reply_head(msgpack_sbuffer *sb, uint64_t id, uint64_t length, const char *source)
{
	msgpack_packer pk;
	msg_begin(sb, &pk, MT_REPLY, id, 4);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, 0);
	msg_pack_key(&pk, "length");
	msgpack_pack_uint64(&pk, length);
	msg_pack_key(&pk, "source");
	msg_pack_cstr(&pk, source);
	msg_pack_key(&pk, "data");
	uint8_t bin[5] = {0xc6, (uint8_t)(length >> 24), (uint8_t)(length >> 16),
	                  (uint8_t)(length >> 8), (uint8_t)length};
	msgpack_sbuffer_write(sb, (const char *)bin, sizeof(bin));
	uint32_t n = (uint32_t)(sb->size - FRAME_HEADER_LEN + length);
	sb->data[0] = (char)(n >> 24);
	sb->data[1] = (char)(n >> 16);
	sb->data[2] = (char)(n >> 8);
	sb->data[3] = (char)n;
}

bool serve_from_store(struct cachenode *n, struct conn *c, uint64_t id,
                      const struct block_request *req, const char *source)
{
	uint64_t bs = n->block_size;
	uint64_t index = req->offset / bs, block_off = index * bs;
	struct block_id bid = hrw_block_id(req->bucket, req->key, req->etag, index);
	struct block_ref ref;
	if (blockstore_get(n->store, bid, &ref) < 0)
		return false;
	uint64_t within = req->offset - block_off;
	if (within + req->length > ref.length) {
		/* Stored from a layout that knew the object as shorter. */
		blockstore_release(&ref);
		return false;
	}
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	reply_head(&sb, id, req->length, source);
	int r = conn_send_file(c, sb.data, sb.size, ref.fd, within, req->length);
	msgpack_sbuffer_destroy(&sb);
	blockstore_release(&ref);
	if (r < 0) {
		conn_close(c, "cannot queue a block");
		return true;
	}
	metric_add(n->m_bytes_hit, (double)req->length);
	return true;
}

void serve_from_memory(struct conn *c, uint64_t id, const struct block_request *req,
                       const char *source, const uint8_t *data, uint64_t block_off,
                       void (*release)(void *arg), void *arg)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	reply_head(&sb, id, req->length, source);
	conn_send_reference(c, sb.data, sb.size, data + (req->offset - block_off), req->length,
	                    release, arg);
	msgpack_sbuffer_destroy(&sb);
}

static void block_read(struct serve_loop *l, struct conn *c, struct request *r)
{
	struct cachenode *n = l->node;
	struct block_request req;
	char why[256];
	if (cacheproto_parse_block_read(r->frame.body, n->block_size, &req, why, sizeof(why)) < 0) {
		metric_add(n->m_errors, 1);
		conn_send_error(c, r->id, -EINVAL, "BLOCK_READ: %s", why);
		return;
	}
	metric_add(n->m_requests, 1);
	if (n->secret != NULL) {
		int g =
		    grant_check(n->secret, n->secret_len, req.bucket, req.key, req.etag, req.grant,
		                req.grant_len, (int64_t)time(NULL), why, sizeof(why));
		if (g < 0) {
			metric_add(n->m_denied, 1);
			conn_send_error(c, r->id, -EACCES, "BLOCK_READ %s/%s: %s", req.bucket,
			                req.key, why);
			return;
		}
	}
	if (serve_from_store(n, c, r->id, &req, "hit")) {
		atomic_fetch_add(&n->hits, 1);
		metric_add(n->m_hits, 1);
		return;
	}
	if (req.peer) {
		/* A peer asks only for what is here: no fill on its behalf. */
		metric_add(n->m_peer_misses, 1);
		conn_send_error(c, r->id, -ENOENT, "block %llu of %s/%s not cached at %s",
		                (unsigned long long)(req.offset / n->block_size), req.bucket,
		                req.key, n->address);
		return;
	}
	atomic_fetch_add(&n->misses, 1);
	metric_add(n->m_misses, 1);
	uint64_t index = req.offset / n->block_size;
	fill_request(n, l->base, c, r->id, &req,
	             hrw_block_id(req.bucket, req.key, req.etag, index));
}

static void version(struct cachenode *n, struct conn *c, uint64_t id)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_REPLY, id, 5);
	msg_pack_key(&pk, "version");
	msgpack_pack_uint64(&pk, 0);
	msg_pack_key(&pk, "role");
	msg_pack_cstr(&pk, "cache");
	msg_pack_key(&pk, "site");
	msg_pack_cstr(&pk, n->cfg->site ? n->cfg->site : "");
	msg_pack_key(&pk, "state");
	msg_pack_cstr(&pk, cacheproto_state_name(register_state(n)));
	msg_pack_key(&pk, "block_size");
	msgpack_pack_uint64(&pk, n->block_size);
	msg_end(&sb);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

void serve_dispatch(void *owner, struct conn *c, struct request *r)
{
	struct serve_loop *l = owner;
	struct cachenode *n = l->node;
	switch (r->frame.type) {
	case MT_BLOCK_READ:
		block_read(l, c, r);
		break;
	case MT_VERSION:
		version(n, c, r->id);
		break;
	case MT_CACHE_WARM:
	case MT_CACHE_EVICT:
	case MT_CACHE_HAS:
		warm_dispatch(l, c, r);
		break;
	default:
		metric_add(n->m_errors, 1);
		conn_send_error(
		    c, r->id, -EPROTO,
		    "%s (type %u) is not served by a cache node (BLOCK_READ, CACHE_WARM, "
		    "CACHE_EVICT, CACHE_HAS and VERSION are)",
		    proto_msg_name(r->frame.type), (unsigned)r->frame.type);
		break;
	}
	request_free(r);
}
