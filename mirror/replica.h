/* One replica of the replication worker (replication.h): copying an object
 * from its bucket to a site bucket, under the key "SRC/KEY" there, and
 * verifying the copy; and the scrub that checks a verified copy later.
 *
 * Objects up to 8 MiB are read whole and sent in one PUT, whose MD5 ETag
 * vouches for them. Larger ones are streamed: one GET on a thread of its
 * own into a 16 MiB ring while the upload sends what came before, never
 * holding the object. The bytes are hashed as they pass (MD5, and SHA-256
 * when the rule asks for it) and held to the rule's bandwidth. */
#ifndef MP_MIRROR_REPLICA_H
#define MP_MIRROR_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "objstore.h"
#include "policy.h"

struct mp_client;

struct replica_job {
	char src[64], dst[64]; /* bucket aliases */
	char rule[POLICY_MAX_NAME + 1];
	char key[OBJSTORE_KEY_MAX + 1], etag[OBJSTORE_ETAG_MAX + 1];
	char md5[33];       /* of the verified copy (scrubs) */
	uint64_t size;      /* the object's size as the layouts know it; 0 unknown */
	unsigned verify;    /* enum policy_verify */
	uint64_t bandwidth; /* the rule's bytes/s; 0 = unlimited */
};

/* Holds the calling thread to a rule's bandwidth for bytes just read. */
typedef void (*replica_throttle_fn)(void *arg, const char *rule, uint64_t bandwidth, size_t bytes);

struct replica_env {
	struct mp_client *client; /* buckets and credentials */
	replica_throttle_fn throttle;
	void *arg;
};

/* Copies and verifies. Returns 0 with the copy's MD5 (hex) and size, or a
 * negative errno with why naming the bucket, the key and what failed. */
int replica_copy(const struct replica_env *env, const struct replica_job *j, char md5_out[33],
                 uint64_t *ret_size, char *why, size_t whylen);
/* Reads the copy back: 1 if it still hashes to j->md5, 0 if it does not or
 * is gone (why says which), < 0 when it cannot tell now. */
int replica_scrub(const struct replica_env *env, const struct replica_job *j, char *why,
                  size_t whylen);

#endif
