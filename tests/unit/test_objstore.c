/* The object-store client against a directory (always) and an S3 server (s3rver, when
 * MP_TEST_S3_ENDPOINT is set; tests/lib/s3server.py sets it), plus retry behaviour against
 * a fake HTTP server in a thread. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <openssl/evp.h>

#include "objstore.h"

#define MiB (1024 * 1024)

struct ctx {
	struct objstore *st;
	char dir[64];
	bool s3;
};

static char *pattern(size_t len, unsigned seed)
{
	char *b = malloc(len ? len : 1);
	uint32_t x = seed * 2654435761u + 1;

	assert_non_null(b);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		b[i] = (char)x;
	}
	return b;
}

static void md5_hex(const void *data, size_t len, char out[33])
{
	unsigned char md[16];
	unsigned int n;

	EVP_Digest(data, len, md, &n, EVP_md5(), NULL);
	for (int i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

static int setup_file(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));
	struct objstore_error err;
	char url[128];

	snprintf(c->dir, sizeof(c->dir), "/tmp/mp-objstore-XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	snprintf(url, sizeof(url), "file://%s", c->dir);
	assert_int_equal(objstore_open(url, NULL, &c->st, &err), 0);
	*state = c;
	return 0;
}

static int teardown_file(void **state)
{
	struct ctx *c = *state;
	char cmd[128];

	objstore_free(c->st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", c->dir);
	assert_int_equal(system(cmd), 0);
	free(c);
	return 0;
}

static int setup_s3(void **state)
{
	const char *ep = getenv("MP_TEST_S3_ENDPOINT");
	const char *bucket = getenv("MP_TEST_S3_BUCKET");
	struct objstore_options opt = {
	    .endpoint = ep,
	    .region = "us-east-1",
	    .access_key = "S3RVER",
	    .secret_key = "S3RVER",
	    .path_style = true,
	    .retry_base_ms = 10,
	    .part_size = 5 * MiB,
	    .parallel_parts = 4,
	};
	struct ctx *c = calloc(1, sizeof(*c));
	struct objstore_error err;
	char url[256];

	snprintf(url, sizeof(url), "s3://%s/run-%d", bucket ? bucket : "mp-test", (int)getpid());
	if (objstore_open(url, &opt, &c->st, &err) < 0)
		fail_msg("open %s: %s", url, err.message);
	c->s3 = true;
	*state = c;
	return 0;
}

static int teardown_s3(void **state)
{
	struct ctx *c = *state;

	objstore_free(c->st);
	free(c);
	return 0;
}

/* A streamed upload's source: the pattern, handed out in order, as asked. */
struct stream_src {
	const char *data;
	uint64_t next; /* the offset the next fill must start at */
	unsigned calls;
};

static int stream_fill(void *arg, uint64_t offset, void *buf, size_t len)
{
	struct stream_src *s = arg;
	assert_int_equal(offset, s->next);
	memcpy(buf, s->data + offset, len);
	s->next = offset + len;
	s->calls++;
	return 0;
}

/* Gives the first chunk (zeros), then fails. */
static int failing_fill(void *arg, uint64_t offset, void *buf, size_t len)
{
	(void)arg;
	if (offset > 0)
		return -EIO;
	memset(buf, 0, len);
	return 0;
}

enum put_how { PUT_SINGLE, PUT_MULTIPART, PUT_STREAM };

static void roundtrip_how(struct ctx *c, const char *key, size_t len, enum put_how how)
{
	char *data = pattern(len, (unsigned)len), *back = malloc(len + 16);
	char etag[OBJSTORE_ETAG_MAX], etag2[OBJSTORE_ETAG_MAX], md5[33];
	struct objstore_error err;
	uint64_t size = 0;
	size_t got = 0;
	int rc;
	bool multipart = how != PUT_SINGLE;
	struct stream_src src = {.data = data};

	rc = how == PUT_STREAM ? objstore_put_stream(c->st, key, len, stream_fill, &src, etag, &err)
	     : how == PUT_MULTIPART ? objstore_put_multipart(c->st, key, data, len, etag, &err)
	                            : objstore_put(c->st, key, data, len, etag, &err);
	if (how == PUT_STREAM && rc == 0)
		assert_int_equal(src.next, len);
	if (rc < 0)
		fail_msg("put %s (%zu bytes): %d %s", key, len, rc, err.message);
	rc = objstore_get_buf(c->st, key, 0, 0, back, len + 16, &got, &err);
	if (rc < 0)
		fail_msg("get %s: %s", key, err.message);
	assert_int_equal(got, len);
	if (len > 0)
		assert_memory_equal(back, data, len);
	assert_int_equal(objstore_head(c->st, key, &size, etag2, &err), 0);
	assert_int_equal(size, len);
	assert_string_equal(etag, etag2);
	md5_hex(data, len, md5);
	/* A single-part ETag is the MD5; a multipart one (on real S3) is not. */
	if (!multipart || !c->s3)
		assert_string_equal(etag, md5);
	free(data);
	free(back);
}

static void roundtrip(struct ctx *c, const char *key, size_t len, bool multipart)
{
	roundtrip_how(c, key, len, multipart ? PUT_MULTIPART : PUT_SINGLE);
}

static void test_roundtrip_stream(void **state)
{
	struct ctx *c = *state;
	/* Several windows of parts (part size 5 MiB on s3rver), a short last one. */
	roundtrip_how(c, "rt/stream-43mib", 43 * MiB + 17, PUT_STREAM);
	roundtrip_how(c, "rt/stream-small", 1000, PUT_STREAM);
	roundtrip_how(c, "rt/stream-empty", 0, PUT_STREAM);
	/* A source that fails: an error naming it, and no object. */
	struct objstore_error err;
	char etag[OBJSTORE_ETAG_MAX];
	int rc = objstore_put_stream(c->st, "rt/stream-failed", 30 * MiB, failing_fill, NULL, etag,
	                             &err);
	assert_true(rc < 0);
	assert_non_null(strstr(err.message, "could not be read"));
	assert_int_equal(objstore_head(c->st, "rt/stream-failed", NULL, NULL, &err), -ENOENT);
}

static void test_roundtrip_small(void **state)
{
	roundtrip(*state, "rt/empty", 0, false);
	roundtrip(*state, "rt/one", 1, false);
	roundtrip(*state, "rt/name with spaces+plus&amp=?", 100, false);
	roundtrip(*state, "rt/1mib", MiB, false);
}

static void test_roundtrip_multipart(void **state)
{
	roundtrip(*state, "rt/20mib", 20 * MiB, true);
	/* Smaller than a part: a plain PUT. */
	roundtrip(*state, "rt/small-mp", 1000, true);
}

static void test_range(void **state)
{
	struct ctx *c = *state;
	size_t len = MiB, got;
	char *data = pattern(len, 7), *buf = malloc(len);
	struct objstore_error err;

	assert_int_equal(objstore_put(c->st, "range/obj", data, len, NULL, &err), 0);
	assert_int_equal(objstore_get_buf(c->st, "range/obj", 1000, 5000, buf, len, &got, &err), 0);
	assert_int_equal(got, 5000);
	assert_memory_equal(buf, data + 1000, 5000);
	/* Open-ended tail. */
	assert_int_equal(objstore_get_buf(c->st, "range/obj", len - 10, 0, buf, len, &got, &err),
	                 0);
	assert_int_equal(got, 10);
	assert_memory_equal(buf, data + len - 10, 10);
	/* A range running past the end is clamped. */
	assert_int_equal(objstore_get_buf(c->st, "range/obj", len - 4, 100, buf, len, &got, &err),
	                 0);
	assert_int_equal(got, 4);
	/* One starting past the end is refused. */
	assert_int_equal(objstore_get_buf(c->st, "range/obj", len + 5, 10, buf, len, &got, &err),
	                 -ERANGE);
	assert_int_equal(err.http_status, 416);
	/* Too small a buffer. */
	assert_int_equal(objstore_get_buf(c->st, "range/obj", 0, 0, buf, 100, &got, &err), -EFBIG);
	free(data);
	free(buf);
}

struct listed {
	char keys[16][64];
	uint64_t sizes[16];
	int n;
};

static int collect(void *arg, const struct objstore_entry *e)
{
	struct listed *l = arg;

	if (l->n >= 16)
		return -E2BIG;
	snprintf(l->keys[l->n], sizeof(l->keys[0]), "%s", e->key);
	l->sizes[l->n++] = e->size;
	return 0;
}

static void test_list_pages(void **state)
{
	struct ctx *c = *state;
	struct objstore_error err;
	struct listed l = {0};
	char key[64], *token = NULL, *next = NULL;
	int pages = 0;

	for (int i = 4; i >= 0; i--) {
		snprintf(key, sizeof(key), "list/k%d", i);
		assert_int_equal(objstore_put(c->st, key, "abcdef", (size_t)i + 1, NULL, &err), 0);
	}
	/* Outside the listed prefix. */
	assert_int_equal(objstore_put(c->st, "listx", "z", 1, NULL, &err), 0);
	do {
		int before = l.n;
		int rc = objstore_list(c->st, "list/", token, 2, collect, &l, &next, &err);
		if (rc < 0)
			fail_msg("list: %s", err.message);
		assert_true(l.n - before <= 2);
		free(token);
		token = next;
		pages++;
	} while (token && pages < 10);
	assert_int_equal(pages, 3);
	assert_int_equal(l.n, 5);
	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "list/k%d", i);
		assert_string_equal(l.keys[i], key);
		assert_int_equal(l.sizes[i], (uint64_t)i + 1);
	}
	/* Empty prefix match. */
	l.n = 0;
	assert_int_equal(objstore_list(c->st, "nothing-here/", NULL, 0, collect, &l, &next, &err),
	                 0);
	assert_int_equal(l.n, 0);
	assert_null(next);
	assert_int_equal(objstore_list(c->st, "", NULL, 1001, collect, &l, &next, &err), -EINVAL);
}

/* Every key a listing gave, joined ("key,key,"), and the most on one page. */
struct joined {
	char keys[1024];
	int page_items, max_page;
};

static int join_key(void *arg, const struct objstore_entry *e)
{
	struct joined *j = arg;

	if (strlen(j->keys) + strlen(e->key) + 2 > sizeof(j->keys))
		return -E2BIG;
	strcat(j->keys, e->key);
	strcat(j->keys, ",");
	j->page_items++;
	return 0;
}

/* Lists prefix page by page, max_keys a page. */
static void list_all(struct ctx *c, const char *prefix, int max_keys, struct joined *j)
{
	struct objstore_error err;
	char *token = NULL, *next = NULL;
	int pages = 0, rc;

	memset(j, 0, sizeof(*j));
	do {
		j->page_items = 0;
		rc = objstore_list(c->st, prefix, token, max_keys, join_key, j, &next, &err);
		if (rc < 0)
			fail_msg("list %s (max %d, after %s): %s", prefix, max_keys,
			         token ? token : "-", err.message);
		if (j->page_items > j->max_page)
			j->max_page = j->page_items;
		free(token);
		token = next;
	} while (token && ++pages < 100);
	assert_null(token);
}

/* Byte order across directory boundaries: a directory "a" sorts as "a/", after "a-b" and
 * before "a0"; pages of every size give the same keys in the same order; prefixes cut
 * inside names and at '/'; temporary files of atomic writes are never keys. */
static void test_list_order(void **state)
{
	static const char *keys[] = {"o/c",     "o/a/c/e", "o/a-b", "o/a/b-c", "o/a0",  "o/b0",
	                             "o/a/c/d", "o/a/b",   "o/b/z", "o/a/c0",  "o/a/c-"};
	static const char *all = "o/a-b,o/a/b,o/a/b-c,o/a/c-,o/a/c/d,o/a/c/e,o/a/c0,o/a0,o/b/z,"
	                         "o/b0,o/c,";
	/* Prefixes that end inside names and at '/', listed a few keys a page. */
	static const struct {
		const char *prefix, *want;
		int max;
	} cuts[] = {
	    {"o/a", "o/a-b,o/a/b,o/a/b-c,o/a/c-,o/a/c/d,o/a/c/e,o/a/c0,o/a0,", 2},
	    {"o/a/", "o/a/b,o/a/b-c,o/a/c-,o/a/c/d,o/a/c/e,o/a/c0,", 1},
	    {"o/a/c", "o/a/c-,o/a/c/d,o/a/c/e,o/a/c0,", 3},
	    {"o/a/c/", "o/a/c/d,o/a/c/e,", 0},
	    {"o/a/b", "o/a/b,o/a/b-c,", 1},
	    {"o/b/", "o/b/z,", 1},
	    {"o/a/c/d/", "", 1},
	};
	struct ctx *c = *state;
	struct objstore_error err;
	char path[128], *next = NULL;
	struct joined j;
	FILE *f;

	/* s3rver walks its own directories and does not list in byte order across them
	 * ("o/a/b-c" before "o/a/b"); S3 does, as file:// must. */
	if (c->s3)
		skip();
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		assert_int_equal(objstore_put(c->st, keys[i], keys[i], strlen(keys[i]), NULL, &err),
		                 0);
	/* What a crashed writer leaves behind, in a directory and at the top. */
	snprintf(path, sizeof(path), "%s/o/a/.objstore-tmp.dead", c->dir);
	assert_non_null(f = fopen(path, "w"));
	fclose(f);
	snprintf(path, sizeof(path), "%s/o/.objstore-tmp.dead", c->dir);
	assert_non_null(f = fopen(path, "w"));
	fclose(f);
	for (int max = 1; max <= 12; max++) {
		list_all(c, "o/", max, &j);
		assert_string_equal(j.keys, all);
		assert_true(j.max_page <= max);
	}
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		list_all(c, cuts[i].prefix, cuts[i].max, &j);
		assert_string_equal(j.keys, cuts[i].want);
	}
	/* A token is the last key given: a listing goes on after any key. */
	memset(&j, 0, sizeof(j));
	assert_int_equal(objstore_list(c->st, "o/", "o/a/c", 3, join_key, &j, &next, &err), 0);
	assert_string_equal(j.keys, "o/a/c-,o/a/c/d,o/a/c/e,");
	assert_string_equal(next, "o/a/c/e");
	free(next);
	memset(&j, 0, sizeof(j));
	assert_int_equal(objstore_list(c->st, "o/", "o/b/", 0, join_key, &j, &next, &err), 0);
	assert_string_equal(j.keys, "o/b/z,o/b0,o/c,");
	assert_null(next);
}

struct ordered {
	char last[64];
	int n, bad;
};

static int check_order(void *arg, const struct objstore_entry *e)
{
	struct ordered *o = arg;

	if (o->n > 0 && strcmp(o->last, e->key) >= 0)
		o->bad++;
	snprintf(o->last, sizeof(o->last), "%s", e->key);
	o->n++;
	return 0;
}

/* Pages that end inside a large directory and at directory boundaries, one key deleted
 * between two pages: every other key once, in order. */
static void test_list_many(void **state)
{
	struct ctx *c = *state;
	struct objstore_error err;
	char key[64], *token = NULL, *next = NULL;

	if (c->s3)
		skip(); /* a file:// matter: directories kept from one page to the next */
	for (int i = 0; i < 1500; i++) {
		snprintf(key, sizeof(key), "m/flat/k%04d", i);
		assert_int_equal(objstore_put(c->st, key, "x", 1, NULL, &err), 0);
	}
	for (int i = 0; i < 400; i++) {
		snprintf(key, sizeof(key), "m/d%02d/k%d", i % 40, i);
		assert_int_equal(objstore_put(c->st, key, "y", 1, NULL, &err), 0);
	}
	for (int page_size = 7; page_size <= 1000; page_size += 331) {
		struct ordered o = {0};
		int pages = 0;
		do {
			assert_int_equal(objstore_list(c->st, "m/", token, page_size, check_order,
			                               &o, &next, &err),
			                 0);
			free(token);
			token = next;
			if (++pages == 3 && page_size == 7)
				assert_int_equal(objstore_delete(c->st, "m/d20/k20", &err), 0);
		} while (token && pages < 1000);
		assert_null(token);
		assert_int_equal(o.bad, 0);
		assert_int_equal(o.n, 1899);
	}
}

static void test_delete_and_missing(void **state)
{
	struct ctx *c = *state;
	struct objstore_error err;
	char buf[16];
	size_t got;

	assert_int_equal(objstore_put(c->st, "del/x", "x", 1, NULL, &err), 0);
	assert_int_equal(objstore_delete(c->st, "del/x", &err), 0);
	assert_int_equal(objstore_head(c->st, "del/x", NULL, NULL, &err), -ENOENT);
	assert_int_equal(err.http_status, 404);
	/* Deleting what is not there succeeds, as on S3. */
	assert_int_equal(objstore_delete(c->st, "del/x", &err), 0);

	memset(&err, 0, sizeof(err));
	assert_int_equal(objstore_get_buf(c->st, "no/such/key", 0, 0, buf, sizeof(buf), &got, &err),
	                 -ENOENT);
	assert_int_equal(err.http_status, 404);
	assert_string_equal(err.code, "NoSuchKey");
	assert_non_null(strstr(err.message, "no/such/key"));
	assert_non_null(strstr(err.message, objstore_bucket(c->st)));
	if (c->s3)
		assert_non_null(strstr(err.message, "404"));
	/* Bad keys are refused before any I/O. */
	assert_int_equal(objstore_put(c->st, "", "x", 1, NULL, &err), -EINVAL);
	assert_int_equal(objstore_put(c->st, "bad\nkey", "x", 1, NULL, &err), -EINVAL);
	if (!c->s3) {
		assert_int_equal(objstore_put(c->st, "../escape", "x", 1, NULL, &err), -EINVAL);
		assert_int_equal(objstore_put(c->st, "a//b", "x", 1, NULL, &err), -EINVAL);
	}
}

/* ---- Retries against a fake server ---- */

struct fake {
	int fd, port;
	int fail_first; /* answer this many requests with fail_status */
	int fail_status;
	int requests;
	pthread_t thread;
};

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	for (;;) {
		struct pollfd p = {.fd = f->fd, .events = POLLIN};
		char req[8192], resp[512];
		size_t n = 0;
		int cfd;

		if (poll(&p, 1, 3000) <= 0)
			break;
		cfd = accept(f->fd, NULL, NULL);
		if (cfd < 0)
			break;
		while (n < sizeof(req) - 1) {
			ssize_t r = read(cfd, req + n, sizeof(req) - 1 - n);
			if (r <= 0)
				break;
			n += (size_t)r;
			req[n] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		f->requests++;
		if (f->requests <= f->fail_first) {
			const char *body =
			    "<Error><Code>SlowDown</Code><Message>Reduce your request "
			    "rate.</Message></Error>";
			if (f->fail_status == 404)
				body =
				    "<Error><Code>NoSuchKey</Code><Message>The specified key does "
				    "not exist.</Message></Error>";
			snprintf(
			    resp, sizeof(resp),
			    "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
			    f->fail_status, strlen(body), body);
		} else {
			snprintf(resp, sizeof(resp),
			         "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: \"e\"\r\n"
			         "Connection: close\r\n\r\nok");
		}
		if (write(cfd, resp, strlen(resp)) < 0)
			perror("fake write");
		close(cfd);
	}
	return NULL;
}

static void fake_start(struct fake *f)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);

	f->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(f->fd >= 0);
	assert_int_equal(bind(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(f->fd, 8), 0);
	assert_int_equal(getsockname(f->fd, (struct sockaddr *)&a, &al), 0);
	f->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
	shutdown(f->fd, SHUT_RDWR);
	pthread_join(f->thread, NULL);
	close(f->fd);
}

static struct objstore *open_at(int port, int attempts)
{
	struct objstore_options opt = {.region = "us-east-1",
	                               .access_key = "AK",
	                               .secret_key = "very-secret-key",
	                               .path_style = true,
	                               .max_attempts = attempts,
	                               .retry_base_ms = 5,
	                               .connect_timeout_ms = 1000,
	                               .timeout_ms = 5000};
	struct objstore_error err;
	struct objstore *st = NULL;
	char ep[64];

	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
	opt.endpoint = ep;
	assert_int_equal(objstore_open("s3://fake-bucket/pre", &opt, &st, &err), 0);
	return st;
}

static void test_retry_503(void **state)
{
	struct fake f = {.fail_first = 2, .fail_status = 503};
	struct objstore_error err;
	struct objstore *st;
	char buf[8];
	size_t got = 0;

	fake_start(&f);
	st = open_at(f.port, 4);
	assert_int_equal(objstore_get_buf(st, "k", 0, 0, buf, sizeof(buf), &got, &err), 0);
	assert_int_equal(got, 2);
	assert_memory_equal(buf, "ok", 2);
	objstore_free(st);
	fake_stop(&f);
	assert_int_equal(f.requests, 3);
}

static void test_retry_gives_up(void **state)
{
	struct fake f = {.fail_first = 100, .fail_status = 503};
	struct objstore_error err;
	struct objstore *st;

	fake_start(&f);
	st = open_at(f.port, 3);
	assert_int_equal(objstore_head(st, "k", NULL, NULL, &err), -EIO);
	assert_int_equal(err.http_status, 503);
	objstore_free(st);
	fake_stop(&f);
	assert_int_equal(f.requests, 3);
}

static void test_no_retry_on_404(void **state)
{
	struct fake f = {.fail_first = 100, .fail_status = 404};
	struct objstore_error err;
	struct objstore *st;
	char buf[8];
	size_t got;

	fake_start(&f);
	st = open_at(f.port, 4);
	assert_int_equal(objstore_get_buf(st, "missing", 0, 0, buf, sizeof(buf), &got, &err),
	                 -ENOENT);
	assert_int_equal(err.http_status, 404);
	assert_string_equal(err.code, "NoSuchKey");
	assert_non_null(strstr(err.message, "fake-bucket/pre/missing"));
	assert_null(strstr(err.message, "very-secret-key"));
	objstore_free(st);
	fake_stop(&f);
	assert_int_equal(f.requests, 1);
}

static void test_unreachable(void **state)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	struct objstore_error err;
	struct objstore *st;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	/* A port that was free a moment ago and has no listener. */
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	port = ntohs(a.sin_port);
	close(fd);
	st = open_at(port, 3);
	assert_int_equal(objstore_put(st, "k", "x", 1, NULL, &err), -ECONNREFUSED);
	assert_int_equal(err.http_status, 0);
	assert_string_equal(err.code, "ConnectFailed");
	assert_non_null(strstr(err.message, "after 3 attempts"));
	assert_non_null(strstr(err.message, "fake-bucket/pre/k"));
	assert_null(strstr(err.message, "very-secret-key"));
	objstore_free(st);
}

static void test_open_errors(void **state)
{
	struct objstore_error err;
	struct objstore *st;
	struct objstore_options opt = {.access_key = "only-one"};

	assert_int_equal(objstore_open("ftp://x", NULL, &st, &err), -EINVAL);
	assert_int_equal(objstore_open("s3://AB", NULL, &st, &err), -EINVAL);
	assert_int_equal(objstore_open("s3://bucket", &opt, &st, &err), -EINVAL);
	assert_null(strstr(err.message, "only-one"));
	opt.access_key = NULL;
	opt.endpoint = "http://user:pw@host";
	assert_int_equal(objstore_open("s3://bucket", &opt, &st, &err), -EINVAL);
	assert_int_equal(objstore_open("file:///nonexistent/mp-objstore", NULL, &st, &err),
	                 -ENOENT);
}

#define BACKEND_TESTS(setup, teardown)                                                             \
	cmocka_unit_test_setup_teardown(test_roundtrip_small, setup, teardown),                    \
	    cmocka_unit_test_setup_teardown(test_roundtrip_multipart, setup, teardown),            \
	    cmocka_unit_test_setup_teardown(test_roundtrip_stream, setup, teardown),               \
	    cmocka_unit_test_setup_teardown(test_range, setup, teardown),                          \
	    cmocka_unit_test_setup_teardown(test_list_pages, setup, teardown),                     \
	    cmocka_unit_test_setup_teardown(test_list_order, setup, teardown),                     \
	    cmocka_unit_test_setup_teardown(test_list_many, setup, teardown),                      \
	    cmocka_unit_test_setup_teardown(test_delete_and_missing, setup, teardown)

int main(void)
{
	const struct CMUnitTest file_tests[] = {BACKEND_TESTS(setup_file, teardown_file)};
	const struct CMUnitTest s3_tests[] = {BACKEND_TESTS(setup_s3, teardown_s3)};
	const struct CMUnitTest http_tests[] = {
	    cmocka_unit_test(test_retry_503),       cmocka_unit_test(test_retry_gives_up),
	    cmocka_unit_test(test_no_retry_on_404), cmocka_unit_test(test_unreachable),
	    cmocka_unit_test(test_open_errors),
	};
	int failed = 0;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	failed += cmocka_run_group_tests_name("objstore_file", file_tests, NULL, NULL);
	failed += cmocka_run_group_tests_name("objstore_http", http_tests, NULL, NULL);
	if (getenv("MP_TEST_S3_ENDPOINT"))
		failed += cmocka_run_group_tests_name("objstore_s3", s3_tests, NULL, NULL);
	else
		fprintf(stderr, "objstore: MP_TEST_S3_ENDPOINT not set; S3 tests skipped\n");
	curl_global_cleanup();
	return failed ? 1 : 0;
}
