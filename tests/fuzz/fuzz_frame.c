/* Fuzz target for the frame decoder and everything that reads a decoded
 * frame: field access, nodes, layouts and change records. The input is a
 * byte stream cut into frames by their 4-byte length, as a connection is. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"
#include "node.h"
#include "proto.h"

#define FUZZ_FRAME_MAX (1u << 20)

static void exercise_body(const msgpack_object *body)
{
	char err[256];
	uint64_t u;
	int64_t i;
	bool b;
	const char *p;
	size_t len;
	const msgpack_object_array *arr;
	msg_get_u64(body, "ino", false, UINT64_MAX, &u, err, sizeof(err));
	msg_get_u64(body, "limit", true, READDIR_MAX_LIMIT, &u, err, sizeof(err));
	msg_get_i64(body, "mtime", false, &i, err, sizeof(err));
	msg_get_bool(body, "parents", false, &b, err, sizeof(err));
	msg_get_bytes(body, "path", false, 1, NODE_PATH_MAX, &p, &len, err, sizeof(err));
	const msgpack_object *node = msg_field(body, "node");
	struct node_rec rec;
	if (node != NULL)
		msg_parse_node(node, &rec, err, sizeof(err));
	const msgpack_object *layout = msg_field(body, "layout");
	if (layout != NULL && layout->type == MSGPACK_OBJECT_BIN)
		node_check_layout((const uint8_t *)layout->via.bin.ptr, layout->via.bin.size, err,
		                  sizeof(err));
	if (msg_get_array(body, "versions", false, 100000, &arr, err, sizeof(err)) == 0) {
		for (uint32_t k = 0; k < arr->size; k++) {
			struct change_header h;
			if (msg_parse_change(&arr->ptr[k], &h, err, sizeof(err)) < 0)
				continue;
			for (uint32_t m = 0; m < h.mutations->size; m++) {
				uint64_t ino;
				bool is_put;
				msg_parse_mutation(&h.mutations->ptr[m], &ino, &rec, &is_put, err,
				                   sizeof(err));
			}
		}
	}
	if (msg_get_array(body, "nodes", false, 100000, &arr, err, sizeof(err)) == 0)
		for (uint32_t k = 0; k < arr->size; k++)
			msg_parse_node(&arr->ptr[k], &rec, err, sizeof(err));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t pos = 0;
	while (size - pos >= FRAME_HEADER_LEN) {
		uint32_t len = (uint32_t)data[pos] << 24 | (uint32_t)data[pos + 1] << 16 |
		               (uint32_t)data[pos + 2] << 8 | data[pos + 3];
		pos += FRAME_HEADER_LEN;
		if (len > FUZZ_FRAME_MAX || len > size - pos)
			break;
		/* A private copy, so reads past the frame are caught. */
		uint8_t *payload = malloc(len ? len : 1);
		if (payload == NULL)
			break;
		memcpy(payload, data + pos, len);
		struct frame f;
		uint64_t id;
		char err[256];
		if (frame_decode(payload, len, &f, &id, err, sizeof(err)) == 0) {
			exercise_body(f.body);
			frame_release(&f);
		}
		free(payload);
		pos += len;
	}
	return 0;
}
