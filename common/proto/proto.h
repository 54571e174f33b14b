/* The wire protocol shared by the primary, mirrors and clients: message
 * types and limits. docs/PROTOCOL.md describes every message. */
#ifndef MP_PROTO_H
#define MP_PROTO_H

#include <stddef.h>

#define PROTO_VERSION         1
#define FRAME_HEADER_LEN      4
#define FRAME_DEFAULT_MAX     (16u << 20)
#define MSG_MAX_DEPTH         16
#define READDIR_DEFAULT_LIMIT 1000
#define READDIR_MAX_LIMIT     10000
#define BATCH_MAX_OPS         10000
#define CLUSTER_ID_MAX        64
/* An origin URL's length at most (clients keep it in fixed buffers). */
#define ORIGIN_MAX 1024
/* The largest max_staleness_ms a read may carry: a day. */
#define MAX_STALENESS_MS_MAX 86400000

enum msg_type { /* MT_: MSG_ names clash with sys/socket.h flags */
	        MT_HELLO = 1,
	        MT_HELLO_OK = 2,
	        MT_ERROR = 3,
	        MT_REPLY = 4,

	        MT_VERSION = 10,
	        MT_LOOKUP = 11,
	        MT_GETATTR = 12,
	        MT_RESOLVE = 13,
	        MT_READDIR = 14,
	        MT_POLICY_GET = 15,
	        MT_REPLICATION_STATUS = 16,
	        MT_SITES = 17,

	        MT_MKDIR = 20,
	        MT_CREATE = 21,
	        MT_SYMLINK = 22,
	        MT_RENAME = 23,
	        MT_UNLINK = 24,
	        MT_RMDIR = 25,
	        MT_SETATTR = 26,
	        MT_BATCH = 27,
	        MT_POLICY_APPLY = 28,
	        MT_GC_CONFIRM_SITES = 29,

	        MT_SUBSCRIBE = 30,
	        MT_CHANGES = 31,
	        MT_HEARTBEAT = 32,
	        MT_ACK = 33,
	        MT_SNAPSHOT_BEGIN = 34,
	        MT_SNAPSHOT_CHUNK = 35,
	        MT_SNAPSHOT_END = 36,
	        MT_SITE_REPORT = 37,

	        MT_BLOCK_READ = 40,
	        MT_CACHE_REGISTER = 41,
	        MT_CACHE_MEMBERS = 42,
	        MT_CACHE_WARM = 43,
	        MT_CACHE_EVICT = 44,
	        MT_CACHE_HAS = 45,

	        MT_WARMUP_START = 50,
	        MT_WARMUP_STATUS = 51,

	        /* Garbage collection at the primary (primary/gc.c). */
	        MT_GC = 60,
};

enum mutation_op { MUT_PUT = 1, MUT_DROP = 2 };

const char *proto_msg_name(unsigned type);
/* "ENOENT" for ENOENT, ...; "EIO" for codes it does not know. */
const char *proto_errno_name(int err);
/* Whether url names an origin bucket the way clients can use it:
 * s3://BUCKET[/PREFIX] (bucket 3..63 bytes of a-z, 0-9, '-', '.'; prefix
 * at most 512 bytes, as objstore_open takes it) or file:///DIR, at most
 * ORIGIN_MAX bytes, no control bytes. Returns 0 or -EINVAL with the reason
 * in err (which does not repeat the URL). */
int proto_origin_check(const char *url, char *err, size_t errlen);

#endif
