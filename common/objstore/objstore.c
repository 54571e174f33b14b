/* Object-store URL dispatch and the calls shared by every backend. */
#include "objstore.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int objstore_fail(struct objstore_error *err, int rc, int http_status, const char *code,
                  const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return rc;
	err->http_status = http_status;
	snprintf(err->code, sizeof(err->code), "%s", code ? code : "");
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return rc;
}

void objstore_set_progress(struct objstore *st, objstore_progress_cb cb, void *arg)
{
	st->progress = cb;
	st->progress_arg = arg;
}

void objstore_report(struct objstore *st, uint64_t bytes)
{
	st->reported += bytes;
	if (st->progress != NULL)
		st->progress(st->progress_arg, bytes);
}

int objstore_check_key(const struct objstore *st, const char *key, struct objstore_error *err)
{
	size_t len;

	if (key == NULL || key[0] == '\0')
		return objstore_fail(err, -EINVAL, 0, "InvalidKey", "%s: empty key", st->bucket);
	len = strlen(key);
	if (len + strlen(st->prefix) > OBJSTORE_KEY_MAX)
		return objstore_fail(err, -EINVAL, 0, "InvalidKey", "%s: key longer than %d bytes",
		                     st->bucket, OBJSTORE_KEY_MAX);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f)
			return objstore_fail(err, -EINVAL, 0, "InvalidKey",
			                     "%s: key has a control byte at offset %zu", st->bucket,
			                     i);
	return 0;
}

/* Splits "BUCKET[/PREFIX]" into bucket and a prefix that is "" or ends with '/'. */
static int split_bucket(const char *rest, char **ret_bucket, char **ret_prefix,
                        struct objstore_error *err)
{
	const char *slash = strchr(rest, '/');
	size_t blen = slash ? (size_t)(slash - rest) : strlen(rest);
	const char *p = slash ? slash + 1 : "";
	size_t plen = strlen(p);
	char *bucket, *prefix;

	if (blen < 3 || blen > 63)
		return objstore_fail(err, -EINVAL, 0, "InvalidURL",
		                     "bucket name must be 3 to 63 bytes");
	for (size_t i = 0; i < blen; i++) {
		char c = rest[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
			return objstore_fail(err, -EINVAL, 0, "InvalidURL",
			                     "bucket name has a bad character at %zu", i);
	}
	if (plen > OBJSTORE_KEY_MAX / 2)
		return objstore_fail(err, -EINVAL, 0, "InvalidURL", "prefix too long");
	bucket = strndup(rest, blen);
	prefix = malloc(plen + 2);
	if (bucket == NULL || prefix == NULL) {
		free(bucket);
		free(prefix);
		return -ENOMEM;
	}
	memcpy(prefix, p, plen);
	if (plen > 0 && p[plen - 1] != '/')
		prefix[plen++] = '/';
	prefix[plen] = '\0';
	*ret_bucket = bucket;
	*ret_prefix = prefix;
	return 0;
}

int objstore_open(const char *url, const struct objstore_options *opt, struct objstore **ret_st,
                  struct objstore_error *err)
{
	struct objstore_options none = {0};
	char *bucket = NULL, *prefix = NULL;
	int rc;

	if (err)
		memset(err, 0, sizeof(*err));
	if (url == NULL)
		return objstore_fail(err, -EINVAL, 0, "InvalidURL", "no URL");
	if (opt == NULL)
		opt = &none;
	if (strncmp(url, "s3://", 5) == 0) {
		rc = split_bucket(url + 5, &bucket, &prefix, err);
		if (rc < 0)
			return rc == -ENOMEM ? objstore_fail(err, rc, 0, "NoMemory", "%s", url)
			                     : rc;
		rc = objstore_s3_new(bucket, prefix, opt, ret_st, err);
	} else if (strncmp(url, "file://", 7) == 0) {
		if (url[7] != '/' || url[8] == '\0')
			return objstore_fail(err, -EINVAL, 0, "InvalidURL",
			                     "file URL must be file:///DIR");
		bucket = strdup(url + 7);
		prefix = strdup("");
		if (bucket == NULL || prefix == NULL)
			rc = -ENOMEM;
		else
			rc = objstore_file_new(bucket, prefix, ret_st, err);
	} else {
		return objstore_fail(err, -EINVAL, 0, "InvalidURL",
		                     "unsupported object-store URL scheme (want s3:// or file://)");
	}
	if (rc < 0) {
		free(bucket);
		free(prefix);
		return rc;
	}
	(*ret_st)->bucket = bucket;
	(*ret_st)->prefix = prefix;
	return 0;
}

void objstore_free(struct objstore *st)
{
	char *bucket, *prefix;

	if (st == NULL)
		return;
	bucket = st->bucket;
	prefix = st->prefix;
	st->ops->free(st);
	free(bucket);
	free(prefix);
}

const char *objstore_bucket(const struct objstore *st)
{
	return st->bucket;
}

const char *objstore_prefix(const struct objstore *st)
{
	return st->prefix;
}

int objstore_get(struct objstore *st, const char *key, uint64_t offset, uint64_t length,
                 objstore_data_cb cb, void *arg, struct objstore_error *err)
{
	int rc = objstore_check_key(st, key, err);

	if (rc < 0)
		return rc;
	if (length > 0 && offset + length < offset)
		return objstore_fail(err, -EINVAL, 0, "InvalidRange", "%s/%s%s: range overflows",
		                     st->bucket, st->prefix, key);
	return st->ops->get(st, key, offset, length, cb, arg, err);
}

struct bufsink {
	char *buf;
	size_t cap, len;
};

static int bufsink_write(void *arg, const void *data, size_t len)
{
	struct bufsink *b = arg;

	if (len > b->cap - b->len)
		return -EFBIG;
	memcpy(b->buf + b->len, data, len);
	b->len += len;
	return 0;
}

int objstore_get_buf(struct objstore *st, const char *key, uint64_t offset, uint64_t length,
                     void *buf, size_t cap, size_t *ret_len, struct objstore_error *err)
{
	struct bufsink b = {.buf = buf, .cap = cap};
	int rc = objstore_get(st, key, offset, length, bufsink_write, &b, err);

	if (rc == -EFBIG)
		return objstore_fail(err, rc, 0, "BufferTooSmall",
		                     "%s/%s%s: object data does not fit in %zu bytes", st->bucket,
		                     st->prefix, key, cap);
	if (rc == 0 && ret_len)
		*ret_len = b.len;
	return rc;
}

int objstore_put(struct objstore *st, const char *key, const void *data, size_t len,
                 char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err)
{
	int rc = objstore_check_key(st, key, err);

	if (rc < 0)
		return rc;
	if (data == NULL && len > 0)
		return objstore_fail(err, -EINVAL, 0, "InvalidArgument", "no data");
	st->reported = 0;
	int r = st->ops->put(st, key, data ? data : "", len, ret_etag, err);
	if (r == 0 && st->reported < len)
		objstore_report(st, len - st->reported);
	return r;
}

int objstore_put_multipart(struct objstore *st, const char *key, const void *data, size_t len,
                           char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err)
{
	int rc = objstore_check_key(st, key, err);

	if (rc < 0)
		return rc;
	if (data == NULL && len > 0)
		return objstore_fail(err, -EINVAL, 0, "InvalidArgument", "no data");
	st->reported = 0;
	int r = st->ops->put_multipart(st, key, data ? data : "", len, ret_etag, err);
	/* Backends that do not report parts as they go report the whole. */
	if (r == 0 && st->reported < len)
		objstore_report(st, len - st->reported);
	return r;
}

int objstore_put_stream(struct objstore *st, const char *key, uint64_t len, objstore_fill_cb fill,
                        void *arg, char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err)
{
	int rc = objstore_check_key(st, key, err);

	if (rc < 0)
		return rc;
	if (fill == NULL)
		return objstore_fail(err, -EINVAL, 0, "InvalidArgument", "no data");
	st->reported = 0;
	rc = st->ops->put_stream(st, key, len, fill, arg, ret_etag, err);
	if (rc == 0 && st->reported < len)
		objstore_report(st, len - st->reported);
	return rc;
}

int objstore_head(struct objstore *st, const char *key, uint64_t *ret_size,
                  char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err)
{
	int rc = objstore_check_key(st, key, err);

	if (rc < 0)
		return rc;
	return st->ops->head(st, key, ret_size, ret_etag, err);
}

int objstore_delete(struct objstore *st, const char *key, struct objstore_error *err)
{
	int rc = objstore_check_key(st, key, err);

	if (rc < 0)
		return rc;
	return st->ops->del(st, key, err);
}

int objstore_list(struct objstore *st, const char *prefix, const char *continuation, int max_keys,
                  objstore_list_cb cb, void *arg, char **ret_next, struct objstore_error *err)
{
	if (max_keys < 0 || max_keys > 1000)
		return objstore_fail(err, -EINVAL, 0, "InvalidArgument",
		                     "max_keys must be 0..1000, not %d", max_keys);
	if (max_keys == 0)
		max_keys = 1000;
	if (prefix == NULL)
		prefix = "";
	if (strlen(prefix) + strlen(st->prefix) > OBJSTORE_KEY_MAX)
		return objstore_fail(err, -EINVAL, 0, "InvalidArgument", "prefix too long");
	if (continuation && strlen(continuation) > 4096)
		return objstore_fail(err, -EINVAL, 0, "InvalidArgument",
		                     "continuation token too long");
	return st->ops->list(st, prefix, continuation, max_keys, cb, arg, ret_next, err);
}

bool objstore_etag_is_md5(const char *etag)
{
	if (strlen(etag) != 32)
		return false;
	for (int i = 0; i < 32; i++)
		if (!((etag[i] >= '0' && etag[i] <= '9') || (etag[i] >= 'a' && etag[i] <= 'f')))
			return false;
	return true;
}
