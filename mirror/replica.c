/* One replica: an object copied from its bucket to a site bucket (key
 * "SRC/KEY" there) and verified, and the scrub that checks it later. Used
 * by the replication worker's copier threads (replication.c); everything
 * here runs on the calling thread. */
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h" /* the client library's buckets, shared like mp-cache does */
#include "objstore.h"
#include "policy.h"
#include "replica.h"

/* Objects up to this size are copied with one GET and one PUT; larger ones
 * are streamed, never held whole. */
#define SINGLE_MAX (8u << 20)

/* Where copied bytes go: hashed (MD5, and SHA-256 when the rule wants
 * it), held to the rule's bandwidth, and kept in buf only when asked. */
struct copy_sink {
	const struct replica_env *env;
	const struct replica_job *j;
	uint8_t *buf;
	size_t len, cap;
	uint64_t total;
	EVP_MD_CTX *md5, *sha;
	bool throttled, keep;
};

static int sink_begin(struct copy_sink *s, const struct replica_env *env,
                      const struct replica_job *j, bool want_sha, bool throttled, bool keep)
{
	memset(s, 0, sizeof(*s));
	s->env = env;
	s->j = j;
	s->throttled = throttled;
	s->keep = keep;
	s->md5 = EVP_MD_CTX_new();
	s->sha = want_sha ? EVP_MD_CTX_new() : NULL;
	if (s->md5 == NULL || (want_sha && s->sha == NULL) ||
	    !EVP_DigestInit_ex(s->md5, EVP_md5(), NULL) ||
	    (want_sha && !EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL))) {
		EVP_MD_CTX_free(s->md5);
		EVP_MD_CTX_free(s->sha);
		s->md5 = s->sha = NULL;
		return -ENOMEM;
	}
	return 0;
}

static void hex(const unsigned char *md, unsigned n, char *out)
{
	for (unsigned i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The digests as hex (md5: 33 bytes, sha: 65, "" when not wanted); frees
 * the contexts but not buf. */
static void sink_end(struct copy_sink *s, char md5[33], char sha[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	md5[0] = sha[0] = '\0';
	if (s->md5 != NULL && EVP_DigestFinal_ex(s->md5, md, &n))
		hex(md, n, md5);
	if (s->sha != NULL && EVP_DigestFinal_ex(s->sha, md, &n))
		hex(md, n, sha);
	EVP_MD_CTX_free(s->md5);
	EVP_MD_CTX_free(s->sha);
	s->md5 = s->sha = NULL;
}

static int sink_data(void *arg, const void *data, size_t len)
{
	struct copy_sink *s = arg;
	if (s->keep && s->len + len > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1 << 20;
		while (cap < s->len + len)
			cap *= 2;
		uint8_t *grown = realloc(s->buf, cap);
		if (grown == NULL)
			return -ENOMEM;
		s->buf = grown;
		s->cap = cap;
	}
	if (s->keep) {
		memcpy(s->buf + s->len, data, len);
		s->len += len;
	}
	s->total += len;
	EVP_DigestUpdate(s->md5, data, len);
	if (s->sha != NULL)
		EVP_DigestUpdate(s->sha, data, len);
	if (s->throttled)
		s->env->throttle(s->env->arg, s->j->rule, s->j->bandwidth, len);
	return 0;
}

/* Reads key of st whole into s (begun by the caller), hashing. */
static int sink_fetch(struct objstore *st, const char *key, struct copy_sink *s,
                      struct objstore_error *oe)
{
	int rc = objstore_get(st, key, 0, 0, sink_data, s, oe);
	if (rc == -ERANGE && s->total == 0)
		rc = 0; /* an empty object has no byte 0 */
	return rc;
}

/* A streamed copy's source: one GET, read on a thread of its own into a
 * ring while the upload sends what came before (the read and the write
 * overlap, and neither holds the object); the upload takes the bytes in
 * order, hashed as they pass. */
#define PIPE_CAP (16u << 20)

struct stream_source {
	struct copy_sink *sink;
	struct objstore *src;
	const char *key;
	struct objstore_error *oe; /* the reader's; read after it is joined */
	/* The S3 ETag the parts make (the MD5 of their MD5s, "-N"), for
	 * uploads that ask for their bytes a part at a time. */
	EVP_MD_CTX *parts;
	unsigned nparts;
	pthread_t reader;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint8_t *ring;
	size_t head, avail; /* the oldest unread byte, and how many follow */
	uint64_t taken;     /* bytes handed to the upload */
	bool eof, cancel;
	int err;
};

static int pipe_push(void *arg, const void *data, size_t len)
{
	struct stream_source *ss = arg;
	const uint8_t *p = data;
	pthread_mutex_lock(&ss->lock);
	while (len > 0) {
		while (ss->avail == PIPE_CAP && !ss->cancel)
			pthread_cond_wait(&ss->cond, &ss->lock);
		if (ss->cancel) {
			pthread_mutex_unlock(&ss->lock);
			return -ECANCELED;
		}
		size_t tail = (ss->head + ss->avail) % PIPE_CAP;
		size_t room = PIPE_CAP - ss->avail, run = PIPE_CAP - tail;
		size_t n = len < room ? len : room;
		if (n > run)
			n = run;
		memcpy(ss->ring + tail, p, n);
		ss->avail += n;
		p += n;
		len -= n;
		pthread_cond_broadcast(&ss->cond);
	}
	pthread_mutex_unlock(&ss->lock);
	return 0;
}

static void *pipe_reader(void *arg)
{
	struct stream_source *ss = arg;
	int rc = objstore_get(ss->src, ss->key, 0, 0, pipe_push, ss, ss->oe);
	pthread_mutex_lock(&ss->lock);
	ss->eof = true;
	ss->err = rc;
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	return NULL;
}

static int stream_fill(void *arg, uint64_t offset, void *buf, size_t len)
{
	struct stream_source *ss = arg;
	if (offset != ss->taken)
		return -ESPIPE; /* the upload asks in order; anything else is a bug */
	uint8_t *out = buf;
	size_t want = len;
	pthread_mutex_lock(&ss->lock);
	while (want > 0) {
		while (ss->avail == 0 && !ss->eof)
			pthread_cond_wait(&ss->cond, &ss->lock);
		if (ss->avail == 0) {
			int err = ss->err < 0 ? ss->err : -EIO; /* shorter than it said */
			pthread_mutex_unlock(&ss->lock);
			return err;
		}
		size_t run = PIPE_CAP - ss->head;
		size_t n = want < ss->avail ? want : ss->avail;
		if (n > run)
			n = run;
		memcpy(out, ss->ring + ss->head, n);
		ss->head = (ss->head + n) % PIPE_CAP;
		ss->avail -= n;
		out += n;
		want -= n;
		pthread_cond_broadcast(&ss->cond);
	}
	pthread_mutex_unlock(&ss->lock);
	ss->taken += len;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (ss->parts != NULL && EVP_Digest(buf, len, md, &n, EVP_md5(), NULL)) {
		EVP_DigestUpdate(ss->parts, md, n);
		ss->nparts++;
	}
	return sink_data(ss->sink, buf, len);
}

/* Starts the reader; 0 or -ENOMEM / -EAGAIN. */
static int pipe_start(struct stream_source *ss)
{
	ss->ring = malloc(PIPE_CAP);
	if (ss->ring == NULL)
		return -ENOMEM;
	pthread_mutex_init(&ss->lock, NULL);
	pthread_cond_init(&ss->cond, NULL);
	if (pthread_create(&ss->reader, NULL, pipe_reader, ss) != 0) {
		pthread_mutex_destroy(&ss->lock);
		pthread_cond_destroy(&ss->cond);
		free(ss->ring);
		ss->ring = NULL;
		return -EAGAIN;
	}
	return 0;
}

/* Stops the reader (if the upload ended early) and frees the ring. */
static void pipe_stop(struct stream_source *ss)
{
	if (ss->ring == NULL)
		return;
	pthread_mutex_lock(&ss->lock);
	ss->cancel = true;
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	pthread_join(ss->reader, NULL);
	pthread_mutex_destroy(&ss->lock);
	pthread_cond_destroy(&ss->cond);
	free(ss->ring);
	ss->ring = NULL;
}

/* The multipart ETag of what stream_fill passed: "HEX-N". */
static void parts_etag(struct stream_source *ss, char out[OBJSTORE_ETAG_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	out[0] = '\0';
	if (ss->parts == NULL || !EVP_DigestFinal_ex(ss->parts, md, &n))
		return;
	char h[2 * EVP_MAX_MD_SIZE + 1];
	hex(md, n, h);
	snprintf(out, OBJSTORE_ETAG_MAX, "%.32s-%u", h, ss->nparts);
}

int replica_copy(const struct replica_env *env, const struct replica_job *j, char md5_out[33],
                 uint64_t *ret_size, char *why, size_t whylen)
{
	struct bucket *sb = NULL, *db = NULL;
	struct objstore *src = NULL, *dst = NULL;
	mp_error err = {0};
	struct objstore_error oe = {0}, se = {0};
	struct copy_sink s = {0}, back = {0};
	char dkey[OBJSTORE_KEY_MAX + 80];
	snprintf(dkey, sizeof(dkey), "%s/%s", j->src, j->key);
	int rc = buckets_acquire(env->client, j->src, false, &sb, &src, &err);
	if (rc == 0)
		rc = buckets_acquire(env->client, j->dst, false, &db, &dst, &err);
	if (rc < 0) {
		snprintf(why, whylen, "%s", err.message);
		goto out;
	}
	bool sha = j->verify == POLICY_VERIFY_SHA256;
	char md5[33] = "", sha_src[65] = "", md5_back[33] = "", sha_back[65] = "";
	/* A small object (as its layout knows it) is read whole at once; the
	 * size of a larger one decides how it is streamed. */
	uint64_t src_size = j->size;
	bool known_small = j->size > 0 && j->size <= SINGLE_MAX;
	rc = known_small ? 0 : objstore_head(src, j->key, &src_size, NULL, &oe);
	if (rc < 0) {
		snprintf(why, whylen, "reading %s/%.300s: %s", j->src, j->key, oe.message);
		goto out;
	}
	if (src_size < j->size) {
		rc = -EIO;
		snprintf(why, whylen,
		         "%s/%.300s: %" PRIu64 " bytes, shorter than the %" PRIu64
		         " its layout names",
		         j->src, j->key, src_size, j->size);
		goto out;
	}
	bool single = src_size <= SINGLE_MAX;
	char etag[OBJSTORE_ETAG_MAX] = "", multipart[OBJSTORE_ETAG_MAX] = "";
	if ((rc = sink_begin(&s, env, j, sha, true, single)) < 0) {
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	if (single) {
		s.buf = src_size > 0 ? malloc((size_t)src_size) : NULL;
		s.cap = s.buf != NULL ? (size_t)src_size : 0;
		rc = sink_fetch(src, j->key, &s, &se);
		if (rc == 0 && s.total < src_size)
			rc = objstore_fail(&se, -EIO, 0, "ShortRead",
			                   "%" PRIu64 " of %" PRIu64 " bytes", s.total, src_size);
		src_size = s.total;
		if (rc == 0)
			rc = objstore_put(dst, dkey, s.buf, s.len, etag, &oe);
	} else {
		struct stream_source ss = {
		    .sink = &s, .src = src, .key = j->key, .oe = &se, .parts = EVP_MD_CTX_new()};
		/* Part hashes only where S3 needs parts (past one PUT's 5 GiB):
		 * below, the store's ETag is the MD5 of the whole. */
		if (ss.parts != NULL &&
		    (src_size <= (5ull << 30) || !EVP_DigestInit_ex(ss.parts, EVP_md5(), NULL))) {
			EVP_MD_CTX_free(ss.parts);
			ss.parts = NULL;
		}
		rc = pipe_start(&ss);
		if (rc == 0) {
			rc = objstore_put_stream(dst, dkey, src_size, stream_fill, &ss, etag, &oe);
			pipe_stop(&ss);
			if (ss.err == -ECANCELED)
				se.message[0] = '\0'; /* stopped because the upload failed */
			/* A failed source fails the upload; say so rather than
			 * what the upload saw. */
			if (rc < 0 && ss.err < 0 && ss.err != -ECANCELED && se.message[0] == '\0')
				snprintf(se.message, sizeof(se.message), "%s", strerror(-ss.err));
		} else {
			snprintf(oe.message, sizeof(oe.message), "cannot start the source reader");
		}
		parts_etag(&ss, multipart);
		EVP_MD_CTX_free(ss.parts);
	}
	sink_end(&s, md5, sha_src);
	if (rc < 0) {
		if (se.message[0] != '\0')
			snprintf(why, whylen, "reading %s/%.300s: %s", j->src, j->key, se.message);
		else
			snprintf(why, whylen, "writing %s/%.300s: %s", j->dst, dkey, oe.message);
		goto out;
	}
	/* The object is immutable: the bytes must be the ones the layout
	 * named, where its ETag is their MD5. A copy that is not is removed. */
	if (objstore_etag_is_md5(j->etag) && strcmp(md5, j->etag) != 0) {
		rc = -EIO;
		snprintf(why, whylen, "%s/%.300s: the bytes read hash to %s, not its ETag %s",
		         j->src, j->key, md5, j->etag);
		(void)objstore_delete(dst, dkey, NULL);
		goto out;
	}
	/* Verify what the site bucket now holds: the store's own hash of
	 * what it received (the MD5 of a single PUT, or of the parts of a
	 * multipart upload) when it is the hash of these bytes; else, and for
	 * sha256, the bytes read back (hashed, not kept). */
	bool store_vouches = !sha && (strcmp(etag, md5) == 0 ||
	                              (multipart[0] != '\0' && strcmp(etag, multipart) == 0));
	uint64_t size = src_size;
	rc = store_vouches ? 0 : objstore_head(dst, dkey, &size, NULL, &oe);
	if (rc == 0 && size != src_size) {
		rc = -EIO;
		snprintf(why, whylen,
		         "%s/%.300s holds %" PRIu64 " bytes after the copy, not %" PRIu64, j->dst,
		         dkey, size, src_size);
		goto out;
	}
	if (rc == 0 && !store_vouches) {
		rc = sink_begin(&back, env, j, sha, false, false);
		if (rc == 0)
			rc = sink_fetch(dst, dkey, &back, &oe);
		sink_end(&back, md5_back, sha_back);
		if (rc == 0 && (strcmp(md5_back, md5) != 0 || strcmp(sha_back, sha_src) != 0)) {
			rc = -EIO;
			snprintf(why, whylen,
			         "%s/%.300s: the copy read back does not hash like the source",
			         j->dst, dkey);
			goto out;
		}
	}
	if (rc < 0) {
		snprintf(why, whylen, "verifying %s/%.300s: %s", j->dst, dkey, oe.message);
		goto out;
	}
	memcpy(md5_out, md5, 33);
	*ret_size = src_size;
out:
	free(s.buf);
	buckets_release(sb, src);
	buckets_release(db, dst);
	return rc;
}

/* A scrub: the copy still hashes to what was verified. 1 if it does, 0
 * if not (counted, copied again), < 0 when it cannot tell now. */
int replica_scrub(const struct replica_env *env, const struct replica_job *j, char *why,
                  size_t whylen)
{
	struct bucket *db = NULL;
	struct objstore *dst = NULL;
	mp_error err = {0};
	struct objstore_error oe = {0};
	struct copy_sink s;
	char dkey[OBJSTORE_KEY_MAX + 80], md5[33] = "", sha[65];
	snprintf(dkey, sizeof(dkey), "%s/%s", j->src, j->key);
	int rc = buckets_acquire(env->client, j->dst, false, &db, &dst, &err);
	if (rc < 0) {
		snprintf(why, whylen, "%s", err.message);
		return rc;
	}
	rc = sink_begin(&s, env, j, false, false, false);
	if (rc == 0)
		rc = sink_fetch(dst, dkey, &s, &oe);
	sink_end(&s, md5, sha);
	buckets_release(db, dst);
	if (rc == -ENOENT || (rc == 0 && strcmp(md5, j->md5) != 0)) {
		snprintf(why, whylen, "%s/%.300s %s", j->dst, dkey,
		         rc == -ENOENT ? "is gone" : "no longer hashes to what was verified");
		return 0;
	}
	if (rc < 0) {
		snprintf(why, whylen, "scrubbing %s/%.300s: %s", j->dst, dkey, oe.message);
		return rc;
	}
	return 1;
}
