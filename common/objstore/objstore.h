/* Object-storage client: one small blocking interface over S3 (and S3-compatible servers) and
 * a local directory used as a bucket.
 *
 *   s3://BUCKET[/PREFIX]   signed with SigV4 through libcurl (opt->endpoint, region, keys)
 *   file:///DIR            keys are files under DIR, written atomically (temp + fsync + rename)
 *
 * Keys given to every call are relative to PREFIX; listed keys come back relative to it too.
 * A handle is not thread-safe: use one per thread (they are cheap: a curl handle each).
 *
 * Every call returns 0 or a negative errno and, when `err` is not NULL, fills it on failure:
 * http_status (0 when no HTTP answer), code (the S3 error code such as "NoSuchKey", or a short
 * local code such as "ConnectFailed") and a message naming bucket, key and status. Credentials
 * never appear in errors. Common results: -ENOENT (missing key or bucket), -EACCES (403),
 * -EINVAL (bad argument or 400), -ERANGE (416), -ETIMEDOUT / -ECONNREFUSED (after retries),
 * -EPROTO (a malformed answer), -EIO (anything else).
 */
#ifndef MP_OBJSTORE_H
#define MP_OBJSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OBJSTORE_ETAG_MAX 80   /* hex MD5, or "<hex>-N" for multipart; quotes removed */
#define OBJSTORE_KEY_MAX  1024 /* S3's limit, in bytes, including PREFIX */

struct objstore;

struct objstore_error {
	int http_status;
	char code[64];
	char message[512];
};

/* Zero means "default" for every numeric field. Strings are copied by objstore_open. */
struct objstore_options {
	const char
	    *endpoint; /* s3: "http(s)://host[:port]"; default https://s3.REGION.amazonaws.com */
	const char *region;     /* s3: default "us-east-1" */
	const char *access_key; /* s3: both or neither (neither = unsigned requests) */
	const char *secret_key;
	bool path_style;        /* s3: ENDPOINT/BUCKET/KEY instead of BUCKET.HOST/KEY */
	int max_attempts;       /* per request, first try included; default 4 */
	unsigned retry_base_ms; /* back-off: base * 2^n with jitter, capped at 10 s; default 100 */
	unsigned connect_timeout_ms; /* default 5,000 */
	unsigned timeout_ms;         /* whole request; default 300,000 */
	unsigned low_speed_time_s;   /* abort if under 1 KiB/s for this long; default 30 */
	size_t part_size;            /* multipart part size; default 8 MiB, at least 5 MiB on S3 */
	int parallel_parts;          /* multipart parts in flight; default 4 */
};

/* Receives object bytes in order; return 0 to go on, a negative errno to stop (returned). */
typedef int (*objstore_data_cb)(void *arg, const void *data, size_t len);

/* One listed object. Pointers are valid during the callback only. */
struct objstore_entry {
	const char *key; /* relative to the handle's PREFIX */
	uint64_t size;
	const char *etag; /* quotes removed */
};
/* Return 0 to go on, a negative errno to stop the listing (returned by objstore_list). */
typedef int (*objstore_list_cb)(void *arg, const struct objstore_entry *entry);

/* Opens a store for `url`. opt may be NULL for file://. *ret_st is owned by the caller and freed
 * with objstore_free. The process must call curl_global_init before the first s3:// open (or let
 * objstore_open do it, which is not thread-safe) and curl_global_cleanup at exit. */
int objstore_open(const char *url, const struct objstore_options *opt, struct objstore **ret_st,
                  struct objstore_error *err);
void objstore_free(struct objstore *st); /* NULL-safe */

/* The bucket name (s3) or directory (file) and the prefix ("" if none). Owned by st. */
const char *objstore_bucket(const struct objstore *st);
const char *objstore_prefix(const struct objstore *st);

/* Bytes [offset, offset + length) of `key`, or to the end when length is 0, streamed to cb.
 * A range past the end gives -ERANGE. Interrupted transfers resume where they stopped. */
int objstore_get(struct objstore *st, const char *key, uint64_t offset, uint64_t length,
                 objstore_data_cb cb, void *arg, struct objstore_error *err);
/* The same into buf (capacity cap); -EFBIG if the data does not fit. *ret_len: bytes read. */
int objstore_get_buf(struct objstore *st, const char *key, uint64_t offset, uint64_t length,
                     void *buf, size_t cap, size_t *ret_len, struct objstore_error *err);

/* Stores `len` bytes as `key` in one request. ret_etag (may be NULL) gets the new ETag. */
int objstore_put(struct objstore *st, const char *key, const void *data, size_t len,
                 char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err);
/* Stores a large object as parts of opt->part_size sent in parallel; a failure aborts the upload.
 * Objects no larger than one part go through objstore_put. */
int objstore_put_multipart(struct objstore *st, const char *key, const void *data, size_t len,
                           char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err);

/* Gives the bytes [offset, offset + len) of an object being stored into buf
 * (exactly len of them), in order of offset. Returns 0 or a negative errno,
 * which stops the upload and is returned. */
typedef int (*objstore_fill_cb)(void *arg, uint64_t offset, void *buf, size_t len);
/* Stores a `len`-byte object whose bytes fill gives, never holding more than
 * parallel_parts x part_size of it in memory: a multipart upload on S3 (one
 * PUT up to a part), a temporary file renamed into place on file://. */
int objstore_put_stream(struct objstore *st, const char *key, uint64_t len, objstore_fill_cb fill,
                        void *arg, char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err);
/* Called as bytes of an upload are stored (after each part of a multipart
 * upload, at the end of a single PUT), on the calling thread. NULL stops it. */
typedef void (*objstore_progress_cb)(void *arg, uint64_t bytes);
void objstore_set_progress(struct objstore *st, objstore_progress_cb cb, void *arg);

/* Size and ETag of `key` (either output may be NULL). */
int objstore_head(struct objstore *st, const char *key, uint64_t *ret_size,
                  char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err);

/* Deletes `key`. Deleting a missing key succeeds (as on S3). */
int objstore_delete(struct objstore *st, const char *key, struct objstore_error *err);

/* One page of keys starting with `prefix` (NULL = all), in byte order, at most max_keys (1..1000;
 * 0 = 1000). `continuation` is NULL for the first page, else the token from the previous page.
 * *ret_next (may be NULL) gets a malloc'd token for the next page, owned by the caller, or NULL
 * when this was the last page. */
int objstore_list(struct objstore *st, const char *prefix, const char *continuation, int max_keys,
                  objstore_list_cb cb, void *arg, char **ret_next, struct objstore_error *err);

/* Whether an ETag is the hex MD5 of the object's bytes (a single-part
 * upload), so that a whole download can be checked against it. */
bool objstore_etag_is_md5(const char *etag);

/* ---- Internal: shared by objstore.c and its backends only. ---- */

struct objstore_ops {
	int (*get)(struct objstore *st, const char *key, uint64_t offset, uint64_t length,
	           objstore_data_cb cb, void *arg, struct objstore_error *err);
	int (*put)(struct objstore *st, const char *key, const void *data, size_t len,
	           char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err);
	int (*put_multipart)(struct objstore *st, const char *key, const void *data, size_t len,
	                     char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err);
	int (*put_stream)(struct objstore *st, const char *key, uint64_t len, objstore_fill_cb fill,
	                  void *arg, char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err);
	int (*head)(struct objstore *st, const char *key, uint64_t *ret_size,
	            char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err);
	int (*del)(struct objstore *st, const char *key, struct objstore_error *err);
	int (*list)(struct objstore *st, const char *prefix, const char *continuation, int max_keys,
	            objstore_list_cb cb, void *arg, char **ret_next, struct objstore_error *err);
	void (*free)(struct objstore *st);
};

/* Every backend's handle starts with this. bucket and prefix are malloc'd, freed by objstore.c. */
struct objstore {
	const struct objstore_ops *ops;
	char *bucket;
	char *prefix; /* "" or ends with '/' */
	objstore_progress_cb progress;
	void *progress_arg;
	uint64_t reported; /* bytes reported during the current upload */
};

/* A backend reports stored bytes of an upload in progress. */
void objstore_report(struct objstore *st, uint64_t bytes);

/* Fills err (if not NULL) and returns rc. */
int objstore_fail(struct objstore_error *err, int rc, int http_status, const char *code,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* -EINVAL unless key is 1..OBJSTORE_KEY_MAX bytes with PREFIX, has no NUL/control bytes. */
int objstore_check_key(const struct objstore *st, const char *key, struct objstore_error *err);

int objstore_s3_new(const char *bucket, const char *prefix, const struct objstore_options *opt,
                    struct objstore **ret_st, struct objstore_error *err);
int objstore_file_new(const char *dir, const char *prefix, struct objstore **ret_st,
                      struct objstore_error *err);

#endif
