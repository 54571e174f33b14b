/* SigV4 as the object-store client sends it.
 *
 * curl 7.88 signs with the current time, so its Authorization header cannot be compared with a
 * fixed vector. Instead:
 *  1. a SigV4 implementation here (OpenSSL HMAC) is checked against Authorization headers that
 *     botocore (Debian's awscli 2.9, S3SigV4Auth, region eu-west-3, 2024-01-02T03:04:05Z) made;
 *  2. requests the client sends to a capture server in a thread are re-signed with it, from the
 *     captured method, path, query, signed headers and x-amz-date, and must give curl's signature;
 *     x-amz-content-sha256 must be the SHA-256 of the body actually sent. */
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
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "objstore.h"

#define AK "AKIDEXAMPLE"
#define SK "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

static void hexs(const unsigned char *in, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", in[i]);
}

static void sha256_hex(const void *d, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned int l;

	EVP_Digest(d, n, md, &l, EVP_sha256(), NULL);
	hexs(md, 32, out);
}

static void hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
	unsigned int l = 32;

	HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &l);
}

/* headers: "name:value\n" lines, lower-case names, sorted; signed: "a;b;c". */
static void sigv4(const char *method, const char *path, const char *query, const char *headers,
                  const char *signed_hdrs, const char *payload, const char *amzdate,
                  const char *region, char sig[65])
{
	char creq[8192], sts[1024], creq_hash[65], date[9], k[64];
	unsigned char kd[32], kr[32], ks[32], ksig[32], out[32];

	snprintf(creq, sizeof(creq), "%s\n%s\n%s\n%s\n%s\n%s", method, path, query, headers,
	         signed_hdrs, payload);
	sha256_hex(creq, strlen(creq), creq_hash);
	memcpy(date, amzdate, 8);
	date[8] = '\0';
	snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s/%s/s3/aws4_request\n%s", amzdate, date,
	         region, creq_hash);
	snprintf(k, sizeof(k), "AWS4%s", SK);
	hmac(k, strlen(k), date, kd);
	hmac(kd, 32, region, kr);
	hmac(kr, 32, "s3", ks);
	hmac(ks, 32, "aws4_request", ksig);
	hmac(ksig, 32, sts, out);
	hexs(out, 32, sig);
}

#define EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void test_botocore_vectors(void **state)
{
	static const struct {
		const char *method, *path, *query, *payload, *sig;
	} v[] = {
	    {"GET", "/bucket/dir/obj%20name.bin", "", EMPTY,
	     "43e0bfa3ba3a297a99f524fdcc9685acb83422a2f2318d02364ca04307cd4cb5"},
	    {"PUT", "/bucket/hello.txt", "",
	     "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
	     "587562708325bfdfb15048f4850334df8e368b93c548bf95211ad9cf3ac9383e"},
	    {"GET", "/bucket", "continuation-token=abc%2Fdef&list-type=2&max-keys=2&prefix=a%2F",
	     EMPTY, "deedea47e054c82ce31b07e38d19e127d3451298058f847bd0ecbadb7f5ccc5d"},
	    {"POST", "/bucket/big", "uploads=", EMPTY,
	     "cfff2bcf92ba266c1dea8f5a813edb5d8f7643a7a125519c34cd2ded98534eed"},
	};
	char hdrs[512], sig[65];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		snprintf(
		    hdrs, sizeof(hdrs),
		    "host:127.0.0.1:9000\nx-amz-content-sha256:%s\nx-amz-date:20240102T030405Z\n",
		    v[i].payload);
		sigv4(v[i].method, v[i].path, v[i].query, hdrs,
		      "host;x-amz-content-sha256;x-amz-date", v[i].payload, "20240102T030405Z",
		      "eu-west-3", sig);
		assert_string_equal(sig, v[i].sig);
	}
}

/* ---- Capture server ---- */

struct capture {
	int fd, port;
	char req[16384]; /* last request: request line and headers */
	char *body;
	size_t body_len;
	int n;
	pthread_t thread;
};

static void *capture_main(void *arg)
{
	struct capture *c = arg;

	for (;;) {
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		char buf[16384], *eoh, *cl;
		size_t n = 0, want = 0, have;
		const char *resp;
		char out[512];
		int cfd;

		if (poll(&p, 1, 3000) <= 0)
			break;
		cfd = accept(c->fd, NULL, NULL);
		if (cfd < 0)
			break;
		while (n < sizeof(buf) - 1) {
			ssize_t r = read(cfd, buf + n, sizeof(buf) - 1 - n);
			if (r <= 0)
				break;
			n += (size_t)r;
			buf[n] = '\0';
			if (strstr(buf, "\r\n\r\n"))
				break;
		}
		eoh = strstr(buf, "\r\n\r\n");
		if (eoh == NULL) {
			close(cfd);
			continue;
		}
		*eoh = '\0';
		snprintf(c->req, sizeof(c->req), "%s", buf);
		cl = strcasestr(c->req, "\r\ncontent-length:");
		want = cl ? strtoul(cl + 17, NULL, 10) : 0;
		free(c->body);
		c->body = malloc(want + 1);
		have = n - (size_t)(eoh + 4 - buf);
		memcpy(c->body, eoh + 4, have);
		while (have < want) {
			ssize_t r = read(cfd, c->body + have, want - have);
			if (r <= 0)
				break;
			have += (size_t)r;
		}
		c->body_len = have;
		c->n++;
		if (strstr(c->req, "list-type=2"))
			resp =
			    "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>";
		else
			resp = "ok";
		snprintf(out, sizeof(out),
		         "HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: %zu\r\n"
		         "Connection: close\r\n\r\n%s",
		         strlen(resp), strncmp(c->req, "HEAD", 4) == 0 ? "" : resp);
		if (write(cfd, out, strlen(out)) < 0)
			perror("capture write");
		close(cfd);
	}
	return NULL;
}

static void capture_start(struct capture *c)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);

	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(c->fd, 8), 0);
	assert_int_equal(getsockname(c->fd, (struct sockaddr *)&a, &al), 0);
	c->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&c->thread, NULL, capture_main, c), 0);
}

static void capture_stop(struct capture *c)
{
	shutdown(c->fd, SHUT_RDWR);
	pthread_join(c->thread, NULL);
	close(c->fd);
	free(c->body);
}

/* Value of header `name` (case-insensitive) in the captured request, trimmed, into out. */
static bool header(const char *req, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);

	for (const char *p = strstr(req, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
		const char *h = p + 2, *e = strstr(h, "\r\n");
		size_t len = e ? (size_t)(e - h) : strlen(h);
		if (len > nl && strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
			const char *v = h + nl + 1;
			while (*v == ' ')
				v++;
			len -= (size_t)(v - h);
			if (len >= cap)
				return false;
			memcpy(out, v, len);
			out[len] = '\0';
			return true;
		}
	}
	return false;
}

/* Re-signs the captured request and compares with curl's signature. */
static void check_captured(struct capture *c, const char *want_method, const char *want_path)
{
	char method[16], target[4096], path[4096], query[4096] = "", auth[1024], date[32];
	char signed_hdrs[512], hdrs[4096] = "", sha[128], body_sha[65], sig[65];
	const char *q, *sh, *sg;

	assert_int_equal(sscanf(c->req, "%15s %4095s", method, target), 2);
	assert_string_equal(method, want_method);
	q = strchr(target, '?');
	snprintf(path, sizeof(path), "%.*s", q ? (int)(q - target) : (int)strlen(target), target);
	if (q)
		snprintf(query, sizeof(query), "%s", q + 1);
	assert_string_equal(path, want_path);
	assert_true(header(c->req, "authorization", auth, sizeof(auth)));
	assert_true(header(c->req, "x-amz-date", date, sizeof(date)));
	assert_true(header(c->req, "x-amz-content-sha256", sha, sizeof(sha)));
	/* The payload hash is the body's. */
	sha256_hex(c->body, c->body_len, body_sha);
	assert_string_equal(sha, body_sha);
	assert_non_null(strstr(auth, "AWS4-HMAC-SHA256 Credential=" AK "/"));
	assert_non_null(strstr(auth, "/eu-west-3/s3/aws4_request"));
	assert_null(strstr(c->req, SK));
	sh = strstr(auth, "SignedHeaders=");
	sg = strstr(auth, "Signature=");
	assert_non_null(sh);
	assert_non_null(sg);
	sh += strlen("SignedHeaders=");
	snprintf(signed_hdrs, sizeof(signed_hdrs), "%.*s", (int)strcspn(sh, ", "), sh);
	/* x-amz-content-sha256 must be covered by the signature. */
	assert_non_null(strstr(signed_hdrs, "x-amz-content-sha256"));
	for (char *tok = signed_hdrs, *end;; tok = end + 1) {
		char name[64], val[1024];
		end = strchr(tok, ';');
		snprintf(name, sizeof(name), "%.*s", end ? (int)(end - tok) : (int)strlen(tok),
		         tok);
		if (!header(c->req, name, val, sizeof(val)))
			fail_msg("signed header %s not sent in:\n%s", name, c->req);
		snprintf(hdrs + strlen(hdrs), sizeof(hdrs) - strlen(hdrs), "%s:%s\n", name, val);
		if (end == NULL)
			break;
	}
	sigv4(method, path, query, hdrs, signed_hdrs, sha, date, "eu-west-3", sig);
	assert_string_equal(sg + strlen("Signature="), sig);
}

static int nop_list(void *arg, const struct objstore_entry *e)
{
	return 0;
}

static void test_curl_signatures(void **state)
{
	struct capture c = {0};
	struct objstore_options opt = {.region = "eu-west-3",
	                               .access_key = AK,
	                               .secret_key = SK,
	                               .path_style = true,
	                               .max_attempts = 1};
	struct objstore_error err;
	struct objstore *st;
	char ep[64], buf[16], *next = NULL;
	size_t got;

	capture_start(&c);
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", c.port);
	opt.endpoint = ep;
	assert_int_equal(objstore_open("s3://bucket/pre", &opt, &st, &err), 0);

	assert_int_equal(
	    objstore_get_buf(st, "dir/obj name.bin", 0, 0, buf, sizeof(buf), &got, &err), 0);
	check_captured(&c, "GET", "/bucket/pre/dir/obj%20name.bin");

	assert_int_equal(objstore_put(st, "hello.txt", "hello", 5, NULL, &err), 0);
	check_captured(&c, "PUT", "/bucket/pre/hello.txt");
	assert_int_equal(c.body_len, 5);

	assert_int_equal(objstore_get_buf(st, "r", 10, 5, buf, sizeof(buf), &got, &err), -EPROTO);
	/* (the capture server ignores Range; the client noticed and refused its bytes) */
	check_captured(&c, "GET", "/bucket/pre/r");

	assert_int_equal(objstore_head(st, "k+1", NULL, NULL, &err), 0);
	check_captured(&c, "HEAD", "/bucket/pre/k%2B1");

	assert_int_equal(objstore_delete(st, "k", &err), 0);
	check_captured(&c, "DELETE", "/bucket/pre/k");

	assert_int_equal(objstore_list(st, "a b/", "tok/=+", 2, nop_list, NULL, &next, &err), 0);
	check_captured(&c, "GET", "/bucket/");
	assert_non_null(strstr(c.req, "?continuation-token=tok%2F%3D%2B&list-type=2&max-keys=2&"
	                              "prefix=pre%2Fa%20b%2F "));
	assert_null(next);

	objstore_free(st);
	capture_stop(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_botocore_vectors),
	    cmocka_unit_test(test_curl_signatures),
	};
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
