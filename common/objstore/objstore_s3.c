/* S3 backend over libcurl. Requests are signed with curl's own SigV4 (CURLOPT_AWS_SIGV4); curl
 * 7.88 neither sends nor derives x-amz-content-sha256 and hashes only CURLOPT_POSTFIELDS as the
 * payload, so every body goes through POSTFIELDS (with a custom method) and the header carries the
 * SHA-256 we compute: curl signs the header and its canonical payload hash then agrees with it.
 * Query strings are built already sorted and encoded because curl 7.88 signs them verbatim. */
#include "objstore.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#if !CURL_AT_LEAST_VERSION(7, 75, 0)
#error "libcurl 7.75.0 or later is needed for CURLOPT_AWS_SIGV4"
#endif

#define RESP_MAX     (8 * 1024 * 1024) /* XML and error bodies; a 1000-key listing is < 1 MiB */
#define BACKOFF_CAP  10000
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct objstore_s3 {
	struct objstore base;
	char *base_url; /* "http://host:port/bucket" or "http://bucket.host:port" */
	char *sigv4;    /* "aws:amz:REGION:s3" */
	char *access_key, *secret_key;
	struct objstore_options opt; /* numbers only; strings above */
	CURL *easy;
};

/* One request and what came back; reused across its attempts. */
struct s3_req {
	const char *method;
	const char *key; /* for messages; NULL for bucket-level requests */
	char *url;
	const void *body;
	size_t body_len;
	char sha[65];
	bool ranged;
	uint64_t offset, length; /* GET range; length 0 = to the end */
	objstore_data_cb cb;     /* GET: 2xx bytes go here, else to resp */
	void *cb_arg;
	/* results */
	CURL *h;
	struct curl_slist *hdrs;
	char errbuf[CURL_ERROR_SIZE];
	long status;
	char *resp;
	size_t resp_len;
	char etag[OBJSTORE_ETAG_MAX];
	uint64_t delivered;
	uint64_t attempt_start; /* first byte asked for by this attempt */
	int cb_rc;
	int attempts;
	/* A PUT whose body fill gives as curl sends it (staged a chunk at a
	 * time): one attempt only, since the source is read once. */
	objstore_fill_cb fill;
	void *fill_arg;
	uint64_t up_len, up_done;
	char *stage;
	size_t stage_cap, stage_len, stage_pos;
};

static struct objstore_s3 *S(struct objstore *st)
{
	return (struct objstore_s3 *)st;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Full jitter in [d/2, d] around base * 2^(attempt-1), capped. */
static unsigned backoff_ms(const struct objstore_s3 *s3, int attempt)
{
	uint64_t d = s3->opt.retry_base_ms;

	for (int i = 1; i < attempt && d < BACKOFF_CAP; i++)
		d *= 2;
	if (d > BACKOFF_CAP)
		d = BACKOFF_CAP;
	return (unsigned)(d / 2 + (uint64_t)random() % (d / 2 + 1));
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[32];
	unsigned int n = 0;

	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	for (unsigned i = 0; i < 32; i++) {
		out[2 * i] = digits[md[i] >> 4];
		out[2 * i + 1] = digits[md[i] & 15];
	}
	out[64] = '\0';
}

/* RFC 3986 encoding as SigV4 wants it; '/' kept when keep_slash. Returns malloc'd or NULL. */
static char *uri_encode(const char *s, bool keep_slash)
{
	static const char digits[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1), *o = out;

	if (out == NULL)
		return NULL;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~' || (c == '/' && keep_slash)) {
			*o++ = (char)c;
		} else {
			*o++ = '%';
			*o++ = digits[c >> 4];
			*o++ = digits[c & 15];
		}
	}
	*o = '\0';
	return out;
}

/* base_url + "/" + encoded(prefix + key) + ("?" + query). */
static char *object_url(struct objstore_s3 *s3, const char *key, const char *query)
{
	char *full, *enc, *url = NULL;

	if (asprintf(&full, "%s%s", s3->base.prefix, key ? key : "") < 0)
		return NULL;
	enc = uri_encode(full, true);
	free(full);
	if (enc && asprintf(&url, "%s/%s%s%s", s3->base_url, enc, query ? "?" : "",
	                    query ? query : "") < 0)
		url = NULL;
	free(enc);
	return url;
}

static void strip_quotes(const char *v, size_t n, char out[OBJSTORE_ETAG_MAX])
{
	while (n > 0 && (v[0] == '"' || v[0] == ' '))
		v++, n--;
	while (n > 0 &&
	       (v[n - 1] == '"' || v[n - 1] == ' ' || v[n - 1] == '\r' || v[n - 1] == '\n'))
		n--;
	if (n >= OBJSTORE_ETAG_MAX)
		n = OBJSTORE_ETAG_MAX - 1;
	memcpy(out, v, n);
	out[n] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct s3_req *r = arg;
	size_t len = size * n;

	if (len > 5 && strncmp(p, "HTTP/", 5) == 0)
		r->etag[0] = '\0'; /* a new response (after a 100 or a redirect) */
	else if (len > 5 && strncasecmp(p, "etag:", 5) == 0)
		strip_quotes(p + 5, len - 5, r->etag);
	return len;
}

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
	struct s3_req *r = arg;
	size_t len = size * n;

	if (r->status == 0)
		curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->cb && r->status / 100 == 2) {
		if (r->status == 200 && r->attempt_start > 0) {
			/* The server ignored our Range: its bytes are not the ones asked for. */
			r->cb_rc = -EPROTO;
			return 0;
		}
		if (r->length > 0 && r->delivered + len > r->length)
			len = (size_t)(r->length - r->delivered);
		if (len > 0) {
			int rc = r->cb(r->cb_arg, p, len);
			if (rc < 0) {
				r->cb_rc = rc;
				return 0;
			}
		}
		r->delivered += len;
		return size * n;
	}
	if (r->resp_len + len > RESP_MAX) {
		r->cb_rc = -EFBIG;
		return 0;
	}
	char *b = realloc(r->resp, r->resp_len + len + 1);
	if (b == NULL) {
		r->cb_rc = -ENOMEM;
		return 0;
	}
	memcpy(b + r->resp_len, p, len);
	r->resp = b;
	r->resp_len += len;
	r->resp[r->resp_len] = '\0';
	return size * n;
}

static size_t on_read(char *p, size_t size, size_t n, void *arg)
{
	struct s3_req *r = arg;
	if (r->stage_pos == r->stage_len) {
		if (r->up_done == r->up_len)
			return 0;
		size_t chunk = r->up_len - r->up_done < r->stage_cap
		                   ? (size_t)(r->up_len - r->up_done)
		                   : r->stage_cap;
		int rc = r->fill(r->fill_arg, r->up_done, r->stage, chunk);
		if (rc < 0) {
			r->cb_rc = rc;
			return CURL_READFUNC_ABORT;
		}
		r->stage_len = chunk;
		r->stage_pos = 0;
		r->up_done += chunk;
	}
	size_t k = size * n < r->stage_len - r->stage_pos ? size * n : r->stage_len - r->stage_pos;
	memcpy(p, r->stage + r->stage_pos, k);
	r->stage_pos += k;
	return k;
}

/* Prepares r->h for one attempt of r. */
static int s3_setup(struct objstore_s3 *s3, struct s3_req *r)
{
	char line[128];
	CURL *h = r->h;

	curl_easy_reset(h);
	curl_slist_free_all(r->hdrs);
	r->hdrs = NULL;
	r->status = 0;
	r->resp_len = 0;
	r->etag[0] = '\0';
	r->errbuf[0] = '\0';
	r->cb_rc = 0;
	r->attempt_start = r->offset + r->delivered;

	/* Bodies come to the data callback (and to the disk) in pieces this
	 * large rather than 16 KiB: fewer calls and writes per object. */
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
	snprintf(line, sizeof(line), "x-amz-content-sha256: %s", r->sha);
	r->hdrs = curl_slist_append(r->hdrs, line);
	/* No "Expect:" to suppress 100-continue: curl 7.88 would sign the empty header it then
	 * does not send, and S3 would reject the signature. */
	if (r->body || r->fill)
		r->hdrs = curl_slist_append(r->hdrs, "Content-Type: application/octet-stream");
	if (r->ranged || r->delivered > 0) {
		uint64_t start = r->offset + r->delivered;
		if (r->length > 0)
			snprintf(line, sizeof(line), "Range: bytes=%llu-%llu",
			         (unsigned long long)start,
			         (unsigned long long)(r->offset + r->length - 1));
		else
			snprintf(line, sizeof(line), "Range: bytes=%llu-",
			         (unsigned long long)start);
		r->hdrs = curl_slist_append(r->hdrs, line);
	}
	if (r->hdrs == NULL)
		return -ENOMEM;

	curl_easy_setopt(h, CURLOPT_URL, r->url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->hdrs);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)s3->opt.connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)s3->opt.timeout_ms);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)s3->opt.low_speed_time_s);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	if (s3->access_key) {
		curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s3->sigv4);
		curl_easy_setopt(h, CURLOPT_USERNAME, s3->access_key);
		curl_easy_setopt(h, CURLOPT_PASSWORD, s3->secret_key);
	}
	if (strcmp(r->method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(r->method, "GET") == 0) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	} else {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
		if (r->body) {
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body);
			curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
		} else if (r->fill) {
			curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
			curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
			curl_easy_setopt(h, CURLOPT_READDATA, r);
			curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->up_len);
			curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 1024L * 1024);
		}
	}
	return 0;
}

/* The text of <tag>...</tag> at or after s (NUL-terminated), XML entities decoded into out.
 * Returns a pointer past the closing tag, or NULL if absent, unterminated or too long. */
static const char *xml_get(const char *s, const char *tag, char *out, size_t cap)
{
	char open[64], close[64];
	const char *b, *e;
	size_t o = 0;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	b = strstr(s, open);
	if (b == NULL)
		return NULL;
	b += strlen(open);
	e = strstr(b, close);
	if (e == NULL)
		return NULL;
	for (const char *p = b; p < e; p++) {
		char c = *p;
		if (c == '&') {
			static const struct {
				const char *name;
				char c;
			} ents[] = {{"amp;", '&'},
			            {"lt;", '<'},
			            {"gt;", '>'},
			            {"quot;", '"'},
			            {"apos;", '\''}};
			size_t i;
			for (i = 0; i < sizeof(ents) / sizeof(ents[0]); i++)
				if (strncmp(p + 1, ents[i].name, strlen(ents[i].name)) == 0)
					break;
			if (i < sizeof(ents) / sizeof(ents[0])) {
				c = ents[i].c;
				p += strlen(ents[i].name);
			} else if (p[1] == '#') {
				char *end;
				bool hexnum = p[2] == 'x';
				unsigned long v =
				    strtoul(p + (hexnum ? 3 : 2), &end, hexnum ? 16 : 10);
				if (*end != ';' || end > e || v == 0 || v > 0x7f)
					return NULL; /* non-ASCII references are not expected */
				c = (char)v;
				p = end;
			} else {
				return NULL;
			}
		}
		if (o + 1 >= cap)
			return NULL;
		out[o++] = c;
	}
	out[o] = '\0';
	return e + strlen(close);
}

static int status_errno(long status)
{
	switch (status) {
	case 404:
		return -ENOENT;
	case 403:
	case 401:
		return -EACCES;
	case 400:
		return -EINVAL;
	case 409:
		return -EBUSY;
	case 412:
		return -ESTALE;
	case 416:
		return -ERANGE;
	default:
		return -EIO;
	}
}

static bool curl_retryable(CURLcode c)
{
	switch (c) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

/* After one attempt: 0 = done (2xx), 1 = try again (after a back-off), < 0 = failed (err set). */
static int s3_classify(struct objstore_s3 *s3, struct s3_req *r, CURLcode c,
                       struct objstore_error *err)
{
	const char *bucket = s3->base.bucket, *prefix = s3->base.prefix;
	const char *key = r->key ? r->key : "";
	char code[64] = "", msg[256] = "";
	bool last = r->attempts >= s3->opt.max_attempts || r->fill != NULL;

	if (r->cb_rc < 0 && r->fill != NULL)
		return objstore_fail(err, r->cb_rc, (int)r->status, "SourceFailed",
		                     "%s/%s%s: the data to store could not be read: %s", bucket,
		                     prefix, key, strerror(-r->cb_rc));
	if (r->cb_rc < 0 && r->cb_rc != -EPROTO)
		return objstore_fail(err, r->cb_rc, (int)r->status, "Aborted",
		                     "%s %s/%s%s: stopped: %s", r->method, bucket, prefix, key,
		                     strerror(-r->cb_rc));
	if (r->cb_rc == -EPROTO)
		return objstore_fail(
		    err, -EPROTO, (int)r->status, "RangeIgnored",
		    "%s %s/%s%s: server answered a ranged GET with the whole object", r->method,
		    bucket, prefix, key);
	if (c != CURLE_OK) {
		int e = c == CURLE_OPERATION_TIMEDOUT     ? -ETIMEDOUT
		        : c == CURLE_COULDNT_CONNECT      ? -ECONNREFUSED
		        : c == CURLE_COULDNT_RESOLVE_HOST ? -EHOSTUNREACH
		                                          : -EIO;
		if (curl_retryable(c) && !last)
			return 1;
		return objstore_fail(err, e, 0,
		                     c == CURLE_COULDNT_CONNECT      ? "ConnectFailed"
		                     : c == CURLE_OPERATION_TIMEDOUT ? "Timeout"
		                                                     : "TransferFailed",
		                     "%s %s/%s%s: %s after %d attempt%s", r->method, bucket, prefix,
		                     key, r->errbuf[0] ? r->errbuf : curl_easy_strerror(c),
		                     r->attempts, r->attempts == 1 ? "" : "s");
	}
	curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->status / 100 == 2)
		return 0;
	if (r->resp) {
		xml_get(r->resp, "Code", code, sizeof(code));
		xml_get(r->resp, "Message", msg, sizeof(msg));
	}
	if (code[0] == '\0')
		snprintf(code, sizeof(code), "%s",
		         r->status == 404   ? "NoSuchKey"
		         : r->status == 403 ? "AccessDenied"
		                            : "HTTPError");
	if ((r->status >= 500 || r->status == 429 || strcmp(code, "SlowDown") == 0 ||
	     strcmp(code, "RequestTimeout") == 0) &&
	    !last)
		return 1;
	return objstore_fail(err, status_errno(r->status), (int)r->status, code,
	                     "%s %s/%s%s: HTTP %ld %s%s%s%s", r->method, bucket, prefix, key,
	                     r->status, code, msg[0] ? " (" : "", msg, msg[0] ? ")" : "");
}

static void s3_req_done(struct s3_req *r)
{
	curl_slist_free_all(r->hdrs);
	r->hdrs = NULL;
	free(r->resp);
	r->resp = NULL;
	free(r->url);
	r->url = NULL;
}

/* Runs r on the handle's easy handle with retries. The caller frees r with s3_req_done. */
static int s3_perform(struct objstore_s3 *s3, struct s3_req *r, struct objstore_error *err)
{
	if (r->url == NULL)
		return objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
	if (r->sha[0] == '\0')
		sha256_hex(r->body ? r->body : "", r->body ? r->body_len : 0, r->sha);
	r->h = s3->easy;
	for (;;) {
		CURLcode c;
		int rc;

		r->attempts++;
		if (s3_setup(s3, r) < 0)
			return objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
		c = curl_easy_perform(r->h);
		rc = s3_classify(s3, r, c, err);
		if (rc <= 0)
			return rc;
		sleep_ms(backoff_ms(s3, r->attempts));
	}
}

static int s3_get(struct objstore *st, const char *key, uint64_t offset, uint64_t length,
                  objstore_data_cb cb, void *arg, struct objstore_error *err)
{
	struct objstore_s3 *s3 = S(st);
	struct s3_req r = {.method = "GET",
	                   .key = key,
	                   .offset = offset,
	                   .length = length,
	                   .cb = cb,
	                   .cb_arg = arg};
	int rc;

	r.url = object_url(s3, key, NULL);
	r.ranged = offset > 0 || length > 0;
	rc = s3_perform(s3, &r, err);
	s3_req_done(&r);
	return rc;
}

static int s3_put(struct objstore *st, const char *key, const void *data, size_t len,
                  char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err)
{
	struct objstore_s3 *s3 = S(st);
	struct s3_req r = {.method = "PUT", .key = key, .body = data, .body_len = len};
	int rc;

	r.url = object_url(s3, key, NULL);
	rc = s3_perform(s3, &r, err);
	if (rc == 0 && ret_etag)
		memcpy(ret_etag, r.etag, sizeof(r.etag));
	s3_req_done(&r);
	return rc;
}

static int s3_head(struct objstore *st, const char *key, uint64_t *ret_size,
                   char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err)
{
	struct objstore_s3 *s3 = S(st);
	struct s3_req r = {.method = "HEAD", .key = key};
	curl_off_t cl = -1;
	int rc;

	r.url = object_url(s3, key, NULL);
	rc = s3_perform(s3, &r, err);
	if (rc == 0) {
		curl_easy_getinfo(r.h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
		if (cl < 0)
			rc = objstore_fail(err, -EPROTO, (int)r.status, "BadResponse",
			                   "HEAD %s/%s%s: no Content-Length", st->bucket,
			                   st->prefix, key);
	}
	if (rc == 0) {
		if (ret_size)
			*ret_size = (uint64_t)cl;
		if (ret_etag)
			memcpy(ret_etag, r.etag, sizeof(r.etag));
	}
	s3_req_done(&r);
	return rc;
}

static int s3_del(struct objstore *st, const char *key, struct objstore_error *err)
{
	struct objstore_s3 *s3 = S(st);
	struct s3_req r = {.method = "DELETE", .key = key};
	int rc;

	r.url = object_url(s3, key, NULL);
	rc = s3_perform(s3, &r, err);
	if (rc == -ENOENT && strcmp(err ? err->code : "NoSuchKey", "NoSuchKey") == 0)
		rc = 0;
	s3_req_done(&r);
	return rc;
}

static int s3_list(struct objstore *st, const char *prefix, const char *continuation, int max_keys,
                   objstore_list_cb cb, void *arg, char **ret_next, struct objstore_error *err)
{
	struct objstore_s3 *s3 = S(st);
	struct s3_req r = {.method = "GET"};
	char *full = NULL, *encp = NULL, *enct = NULL, *query = NULL, *next = NULL;
	size_t plen = strlen(st->prefix);
	char key[OBJSTORE_KEY_MAX + 1], etag[OBJSTORE_ETAG_MAX + 2], num[32], trunc[8];
	const char *p;
	int rc = -ENOMEM;

	if (asprintf(&full, "%s%s", st->prefix, prefix) < 0)
		return -ENOMEM;
	encp = uri_encode(full, false);
	enct = continuation ? uri_encode(continuation, false) : NULL;
	if (encp == NULL || (continuation && enct == NULL))
		goto out;
	/* Parameters in byte order: curl 7.88 signs the query as given. */
	if (asprintf(&query, "%s%s%slist-type=2&max-keys=%d&prefix=%s",
	             enct ? "continuation-token=" : "", enct ? enct : "", enct ? "&" : "", max_keys,
	             encp) < 0) {
		query = NULL;
		goto out;
	}
	if (asprintf(&r.url, "%s/?%s", s3->base_url, query) < 0)
		r.url = NULL;
	rc = s3_perform(s3, &r, err);
	if (rc < 0)
		goto out;
	if (r.resp == NULL || strstr(r.resp, "<ListBucketResult") == NULL) {
		rc = objstore_fail(err, -EPROTO, (int)r.status, "BadResponse",
		                   "LIST %s/%s: not a ListBucketResult", st->bucket, full);
		goto out;
	}
	p = r.resp;
	while ((p = strstr(p, "<Contents>")) != NULL) {
		const char *end = strstr(p, "</Contents>");
		struct objstore_entry e = {.etag = etag};
		char *stop;
		if (end == NULL)
			break;
		/* Bound each field to its own <Contents> element. */
		char *one = strndup(p, (size_t)(end - p));
		if (one == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		bool ok =
		    xml_get(one, "Key", key, sizeof(key)) && xml_get(one, "Size", num, sizeof(num));
		char raw[OBJSTORE_ETAG_MAX + 2] = "";
		xml_get(one, "ETag", raw, sizeof(raw));
		free(one);
		errno = 0;
		e.size = ok ? strtoull(num, &stop, 10) : 0;
		if (!ok || errno || *stop || num[0] == '-' || strncmp(key, st->prefix, plen) != 0) {
			rc = objstore_fail(err, -EPROTO, (int)r.status, "BadResponse",
			                   "LIST %s/%s: malformed <Contents> entry", st->bucket,
			                   full);
			goto out;
		}
		strip_quotes(raw, strlen(raw), etag);
		e.key = key + plen;
		rc = cb(arg, &e);
		if (rc < 0)
			goto out;
		p = end + strlen("</Contents>");
	}
	rc = 0;
	if (xml_get(r.resp, "IsTruncated", trunc, sizeof(trunc)) && strcmp(trunc, "true") == 0) {
		char tok[4097];
		if (!xml_get(r.resp, "NextContinuationToken", tok, sizeof(tok)) || tok[0] == '\0') {
			rc = objstore_fail(err, -EPROTO, (int)r.status, "BadResponse",
			                   "LIST %s/%s: truncated without a continuation token",
			                   st->bucket, full);
			goto out;
		}
		next = strdup(tok);
		if (next == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
	if (ret_next)
		*ret_next = next;
	else
		free(next);
out:
	if (rc == -ENOMEM)
		objstore_fail(err, rc, 0, "NoMemory", "out of memory");
	s3_req_done(&r);
	free(full);
	free(encp);
	free(enct);
	free(query);
	return rc;
}

/* ---- Multipart upload ---- */

struct s3_part {
	struct s3_req req;
	int number;          /* 1-based */
	uint64_t not_before; /* monotonic ms: back-off before the next attempt */
	int slot;            /* pool entry while running */
	bool done, running;
};

static int s3_mp_create(struct objstore_s3 *s3, const char *key, char **ret_id,
                        struct objstore_error *err)
{
	struct s3_req r = {.method = "POST", .key = key};
	char id[1024];
	int rc;

	r.url = object_url(s3, key, "uploads=");
	rc = s3_perform(s3, &r, err);
	if (rc == 0 &&
	    (r.resp == NULL || !xml_get(r.resp, "UploadId", id, sizeof(id)) || id[0] == '\0'))
		rc = objstore_fail(err, -EPROTO, (int)r.status, "BadResponse",
		                   "CreateMultipartUpload %s/%s%s: no UploadId", s3->base.bucket,
		                   s3->base.prefix, key);
	if (rc == 0) {
		*ret_id = strdup(id);
		if (*ret_id == NULL)
			rc = objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
	}
	s3_req_done(&r);
	return rc;
}

static void s3_mp_abort(struct objstore_s3 *s3, const char *key, const char *qid)
{
	struct s3_req r = {.method = "DELETE", .key = key};
	char *q = NULL;

	if (asprintf(&q, "uploadId=%s", qid) < 0)
		return;
	r.url = object_url(s3, key, q);
	(void)s3_perform(s3, &r, NULL);
	s3_req_done(&r);
	free(q);
}

/* Sends every part with up to parallel_parts in flight, each with its own retries. */
/* parts[i] is part number first + i, its bytes at data + i * part_size (the
 * last one to data + len). */
static int s3_mp_parts(struct objstore_s3 *s3, const char *key, const char *qid,
                       struct s3_part *parts, size_t nparts, int first, const char *data,
                       size_t len, struct objstore_error *err)
{
	size_t part = s3->opt.part_size, done = 0, running = 0;
	CURLM *m = curl_multi_init();
	CURL **pool;
	bool *busy;
	int npool = s3->opt.parallel_parts, rc = 0;

	pool = calloc((size_t)npool, sizeof(*pool));
	busy = calloc((size_t)npool, sizeof(*busy));
	if (m == NULL || pool == NULL || busy == NULL) {
		rc = objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nparts; i++) {
		struct s3_req *r = &parts[i].req;
		char q[1200];
		parts[i].number = first + (int)i;
		r->method = "PUT";
		r->key = key;
		r->body = data + i * part;
		r->body_len = i + 1 == nparts ? len - i * part : part;
		snprintf(q, sizeof(q), "partNumber=%d&uploadId=%s", parts[i].number, qid);
		r->url = object_url(s3, key, q);
		if (r->url == NULL) {
			rc = objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
			goto out;
		}
	}
	while (done < nparts && rc == 0) {
		uint64_t now = now_ms(), wait = 1000;
		CURLMsg *msg;
		int left;

		/* Start what may start. */
		for (size_t i = 0; i < nparts && running < (size_t)npool; i++) {
			struct s3_part *p = &parts[i];
			int slot;
			if (p->done || p->running)
				continue;
			if (p->not_before > now) {
				if (p->not_before - now < wait)
					wait = p->not_before - now;
				continue;
			}
			for (slot = 0; slot < npool && busy[slot]; slot++)
				;
			if (pool[slot] == NULL)
				pool[slot] = curl_easy_init();
			if (pool[slot] == NULL) {
				rc = objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
				goto out;
			}
			/* Hashed as the part starts, so that hashing overlaps the
			 * transfers already in flight. */
			if (p->req.sha[0] == '\0')
				sha256_hex(p->req.body, p->req.body_len, p->req.sha);
			p->req.h = pool[slot];
			p->req.attempts++;
			if (s3_setup(s3, &p->req) < 0) {
				rc = objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
				goto out;
			}
			curl_easy_setopt(p->req.h, CURLOPT_PRIVATE, p);
			curl_multi_add_handle(m, p->req.h);
			p->running = true;
			p->slot = slot;
			busy[slot] = true;
			running++;
		}
		int still = 0;
		curl_multi_perform(m, &still);
		while ((msg = curl_multi_info_read(m, &left)) != NULL) {
			struct s3_part *p = NULL;
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&p);
			CURLcode c = msg->data.result;
			curl_multi_remove_handle(m, msg->easy_handle);
			p->running = false;
			busy[p->slot] = false;
			running--;
			int r = s3_classify(s3, &p->req, c, err);
			if (r == 0 && p->req.etag[0] == '\0')
				r = objstore_fail(err, -EPROTO, (int)p->req.status, "BadResponse",
				                  "UploadPart %d of %s/%s%s: no ETag", p->number,
				                  s3->base.bucket, s3->base.prefix, key);
			if (r == 0) {
				p->done = true;
				done++;
				objstore_report(&s3->base, p->req.body_len);
			} else if (r == 1) {
				p->not_before = now_ms() + backoff_ms(s3, p->req.attempts);
			} else {
				rc = r;
				break;
			}
		}
		if (rc == 0 && done < nparts)
			curl_multi_poll(m, NULL, 0, running ? 1000 : (int)wait, NULL);
	}
out:
	for (size_t i = 0; i < nparts; i++)
		if (parts[i].running)
			curl_multi_remove_handle(m, parts[i].req.h);
	for (int i = 0; pool && i < npool; i++)
		if (pool[i])
			curl_easy_cleanup(pool[i]);
	free(pool);
	free(busy);
	curl_multi_cleanup(m);
	return rc;
}

static int s3_mp_complete(struct objstore_s3 *s3, const char *key, const char *qid,
                          struct s3_part *parts, size_t nparts, char ret_etag[OBJSTORE_ETAG_MAX],
                          struct objstore_error *err)
{
	struct s3_req r = {.method = "POST", .key = key};
	size_t cap = 128 + nparts * (64 + OBJSTORE_ETAG_MAX), off = 0;
	char *body = malloc(cap), *q = NULL, code[64] = "", msg[256] = "";
	char raw[OBJSTORE_ETAG_MAX + 16];
	int rc;

	if (body == NULL || asprintf(&q, "uploadId=%s", qid) < 0) {
		free(body);
		return objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
	}
	off += (size_t)snprintf(body + off, cap - off, "<CompleteMultipartUpload>");
	for (size_t i = 0; i < nparts; i++)
		off +=
		    (size_t)snprintf(body + off, cap - off,
		                     "<Part><PartNumber>%d</PartNumber><ETag>\"%s\"</ETag></Part>",
		                     parts[i].number, parts[i].req.etag);
	off += (size_t)snprintf(body + off, cap - off, "</CompleteMultipartUpload>");
	r.url = object_url(s3, key, q);
	r.body = body;
	r.body_len = off;
	rc = s3_perform(s3, &r, err);
	/* S3 may answer 200 and put the error in the body. */
	if (rc == 0 && r.resp && xml_get(r.resp, "Code", code, sizeof(code)) &&
	    strstr(r.resp, "<Error>")) {
		xml_get(r.resp, "Message", msg, sizeof(msg));
		rc = objstore_fail(err, -EIO, (int)r.status, code,
		                   "CompleteMultipartUpload %s/%s%s: %s (%s)", s3->base.bucket,
		                   s3->base.prefix, key, code, msg);
	} else if (rc == 0 && (r.resp == NULL || !xml_get(r.resp, "ETag", raw, sizeof(raw)))) {
		rc = objstore_fail(err, -EPROTO, (int)r.status, "BadResponse",
		                   "CompleteMultipartUpload %s/%s%s: no ETag in the answer",
		                   s3->base.bucket, s3->base.prefix, key);
	}
	if (rc == 0 && ret_etag)
		strip_quotes(raw, strlen(raw), ret_etag);
	s3_req_done(&r);
	free(body);
	free(q);
	return rc;
}

static int s3_put_multipart(struct objstore *st, const char *key, const void *data, size_t len,
                            char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err)
{
	struct objstore_s3 *s3 = S(st);
	size_t part = s3->opt.part_size, nparts;
	struct s3_part *parts;
	char *id = NULL, *qid = NULL;
	int rc;

	if (len <= part)
		return s3_put(st, key, data, len, ret_etag, err);
	nparts = (len + part - 1) / part;
	if (nparts > 10000)
		return objstore_fail(err, -EINVAL, 0, "InvalidArgument",
		                     "%s/%s%s: %zu parts; S3 allows 10,000 (raise part_size)",
		                     st->bucket, st->prefix, key, nparts);
	parts = calloc(nparts, sizeof(*parts));
	if (parts == NULL)
		return objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
	rc = s3_mp_create(s3, key, &id, err);
	if (rc < 0)
		goto out;
	qid = uri_encode(id, false);
	if (qid == NULL) {
		rc = objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
		goto abort;
	}
	rc = s3_mp_parts(s3, key, qid, parts, nparts, 1, data, len, err);
	if (rc == 0)
		rc = s3_mp_complete(s3, key, qid, parts, nparts, ret_etag, err);
abort:
	if (rc < 0 && id)
		s3_mp_abort(s3, key, qid ? qid : id);
out:
	for (size_t i = 0; i < nparts; i++) {
		parts[i].req.h = NULL;
		s3_req_done(&parts[i].req);
	}
	free(parts);
	free(id);
	free(qid);
	return rc;
}

/* One PUT whose body is read from the source as it is sent (no buffer of
 * the whole, no parts): S3 takes up to 5 GiB in one PUT. */
#define STREAM_PUT_MAX   (5ull << 30)
#define STREAM_STAGE_MAX (4u << 20)

static int s3_put_streamed(struct objstore_s3 *s3, const char *key, uint64_t len,
                           objstore_fill_cb fill, void *arg, char ret_etag[OBJSTORE_ETAG_MAX],
                           struct objstore_error *err)
{
	struct s3_req r = {
	    .method = "PUT", .key = key, .fill = fill, .fill_arg = arg, .up_len = len};
	r.stage_cap = len < STREAM_STAGE_MAX ? (size_t)len : STREAM_STAGE_MAX;
	r.stage = malloc(r.stage_cap ? r.stage_cap : 1);
	if (r.stage == NULL)
		return objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
	/* The body is not known before it is sent: SigV4's unsigned payload. */
	snprintf(r.sha, sizeof(r.sha), "UNSIGNED-PAYLOAD");
	r.url = object_url(s3, key, NULL);
	int rc = s3_perform(s3, &r, err);
	if (rc == 0 && ret_etag)
		memcpy(ret_etag, r.etag, sizeof(r.etag));
	if (rc == 0)
		objstore_report(&s3->base, len);
	s3_req_done(&r);
	free(r.stage);
	/* Some S3-compatible servers keep what arrived of an aborted PUT. */
	if (rc < 0 && r.cb_rc < 0)
		(void)s3_del(&s3->base, key, NULL);
	return rc;
}

/* Beyond one PUT: a multipart upload a window of parallel_parts parts at a
 * time, each window filled (in order) before it is sent. */
static int s3_put_stream(struct objstore *st, const char *key, uint64_t len, objstore_fill_cb fill,
                         void *arg, char ret_etag[OBJSTORE_ETAG_MAX], struct objstore_error *err)
{
	struct objstore_s3 *s3 = S(st);
	size_t part = s3->opt.part_size, npool = (size_t)s3->opt.parallel_parts;
	if (len > part && len <= STREAM_PUT_MAX)
		return s3_put_streamed(s3, key, len, fill, arg, ret_etag, err);
	if (len <= part) {
		char *buf = malloc(len ? (size_t)len : 1);
		if (buf == NULL)
			return objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
		int rc = len ? fill(arg, 0, buf, (size_t)len) : 0;
		if (rc < 0)
			rc = objstore_fail(err, rc, 0, "SourceFailed",
			                   "%s/%s%s: the data to store could not be read: %s",
			                   st->bucket, st->prefix, key, strerror(-rc));
		else
			rc = s3_put(st, key, buf, (size_t)len, ret_etag, err);
		free(buf);
		return rc;
	}
	uint64_t nparts = (len + part - 1) / part;
	if (nparts > 10000)
		return objstore_fail(err, -EINVAL, 0, "InvalidArgument",
		                     "%s/%s%s: %llu parts; S3 allows 10,000 (raise part_size)",
		                     st->bucket, st->prefix, key, (unsigned long long)nparts);
	struct s3_part *parts = calloc((size_t)nparts, sizeof(*parts));
	char *window = malloc(npool * part), *id = NULL, *qid = NULL;
	int rc = 0;
	if (parts == NULL || window == NULL) {
		rc = objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
		goto out;
	}
	rc = s3_mp_create(s3, key, &id, err);
	if (rc < 0)
		goto out;
	qid = uri_encode(id, false);
	if (qid == NULL) {
		rc = objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
		goto abort;
	}
	for (uint64_t w = 0; rc == 0 && w < nparts; w += npool) {
		size_t n = nparts - w < npool ? (size_t)(nparts - w) : npool;
		uint64_t off = w * part;
		size_t wlen = off + (uint64_t)n * part > len ? (size_t)(len - off) : n * part;
		for (size_t done = 0; rc == 0 && done < wlen;) {
			size_t chunk = wlen - done < part ? wlen - done : part;
			rc = fill(arg, off + done, window + done, chunk);
			if (rc < 0)
				rc = objstore_fail(
				    err, rc, 0, "SourceFailed",
				    "%s/%s%s: the data to store could not be read: %s", st->bucket,
				    st->prefix, key, strerror(-rc));
			done += chunk;
		}
		if (rc == 0)
			rc = s3_mp_parts(s3, key, qid, parts + w, n, (int)w + 1, window, wlen, err);
	}
	if (rc == 0)
		rc = s3_mp_complete(s3, key, qid, parts, (size_t)nparts, ret_etag, err);
abort:
	if (rc < 0 && id)
		s3_mp_abort(s3, key, qid ? qid : id);
out:
	for (uint64_t i = 0; parts != NULL && i < nparts; i++) {
		parts[i].req.h = NULL;
		s3_req_done(&parts[i].req);
	}
	free(parts);
	free(window);
	free(id);
	free(qid);
	return rc;
}

static void s3_free(struct objstore *st)
{
	struct objstore_s3 *s3 = S(st);

	if (s3->easy)
		curl_easy_cleanup(s3->easy);
	free(s3->base_url);
	free(s3->sigv4);
	free(s3->access_key);
	if (s3->secret_key) {
		explicit_bzero(s3->secret_key, strlen(s3->secret_key));
		free(s3->secret_key);
	}
	free(s3);
}

static const struct objstore_ops s3_ops = {
    .get = s3_get,
    .put = s3_put,
    .put_multipart = s3_put_multipart,
    .put_stream = s3_put_stream,
    .head = s3_head,
    .del = s3_del,
    .list = s3_list,
    .free = s3_free,
};

int objstore_s3_new(const char *bucket, const char *prefix, const struct objstore_options *opt,
                    struct objstore **ret_st, struct objstore_error *err)
{
	const curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
	const char *region = opt->region && opt->region[0] ? opt->region : "us-east-1";
	char *endpoint = NULL;
	const char *hostpart;
	struct objstore_s3 *s3;
	size_t elen;

	if (vi == NULL || vi->version_num < 0x074b00)
		return objstore_fail(err, -ENOTSUP, 0, "CurlTooOld",
		                     "libcurl %s lacks AWS SigV4 (7.75.0 or later needed)",
		                     vi ? vi->version : "?");
	if (!opt->access_key != !opt->secret_key)
		return objstore_fail(err, -EINVAL, 0, "InvalidArgument",
		                     "s3://%s: give both access and secret key, or neither",
		                     bucket);
	for (const char *c = region; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
			return objstore_fail(err, -EINVAL, 0, "InvalidArgument", "bad region");
	if (opt->endpoint && opt->endpoint[0])
		endpoint = strdup(opt->endpoint);
	else if (asprintf(&endpoint, "https://s3.%s.amazonaws.com", region) < 0)
		endpoint = NULL;
	if (endpoint == NULL)
		return -ENOMEM;
	elen = strlen(endpoint);
	while (elen > 0 && endpoint[elen - 1] == '/')
		endpoint[--elen] = '\0';
	if (strncmp(endpoint, "http://", 7) == 0)
		hostpart = endpoint + 7;
	else if (strncmp(endpoint, "https://", 8) == 0)
		hostpart = endpoint + 8;
	else
		hostpart = NULL;
	if (hostpart == NULL || hostpart[0] == '\0' || strchr(hostpart, '/') ||
	    strchr(hostpart, '@') || strchr(hostpart, '?')) {
		free(endpoint);
		return objstore_fail(err, -EINVAL, 0, "InvalidArgument",
		                     "endpoint must be http(s)://host[:port]");
	}
	s3 = calloc(1, sizeof(*s3));
	if (s3 == NULL) {
		free(endpoint);
		return -ENOMEM;
	}
	s3->base.ops = &s3_ops;
	s3->base.bucket = (char *)bucket; /* for messages until objstore_open takes over */
	s3->base.prefix = (char *)prefix;
	if (opt->path_style || strchr(bucket, '.')) {
		if (asprintf(&s3->base_url, "%s/%s", endpoint, bucket) < 0)
			s3->base_url = NULL;
	} else {
		if (asprintf(&s3->base_url, "%.*s%s.%s", (int)(hostpart - endpoint), endpoint,
		             bucket, hostpart) < 0)
			s3->base_url = NULL;
	}
	free(endpoint);
	if (asprintf(&s3->sigv4, "aws:amz:%s:s3", region) < 0)
		s3->sigv4 = NULL;
	s3->access_key = opt->access_key ? strdup(opt->access_key) : NULL;
	s3->secret_key = opt->secret_key ? strdup(opt->secret_key) : NULL;
	s3->easy = curl_easy_init();
	s3->opt.max_attempts = opt->max_attempts > 0 ? opt->max_attempts : 4;
	s3->opt.retry_base_ms = opt->retry_base_ms ? opt->retry_base_ms : 100;
	s3->opt.connect_timeout_ms = opt->connect_timeout_ms ? opt->connect_timeout_ms : 5000;
	s3->opt.timeout_ms = opt->timeout_ms ? opt->timeout_ms : 300000;
	s3->opt.low_speed_time_s = opt->low_speed_time_s ? opt->low_speed_time_s : 30;
	s3->opt.part_size = opt->part_size ? opt->part_size : 8 * 1024 * 1024;
	s3->opt.parallel_parts = opt->parallel_parts > 0 ? opt->parallel_parts : 4;
	if (s3->opt.parallel_parts > 64)
		s3->opt.parallel_parts = 64;
	if (s3->base_url == NULL || s3->sigv4 == NULL || s3->easy == NULL ||
	    (opt->access_key && (s3->access_key == NULL || s3->secret_key == NULL))) {
		s3_free(&s3->base);
		return objstore_fail(err, -ENOMEM, 0, "NoMemory", "out of memory");
	}
	*ret_st = &s3->base;
	return 0;
}
