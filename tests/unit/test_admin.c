/* The admin listener over real HTTP on 127.0.0.1, with a raw client on
 * bufferevents in the same event loop; and the JSON writer its /status
 * documents use. */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "admin.h"
#include "json.h"
#include "metrics.h"

/* --- JSON writer ------------------------------------------------------- */

struct jbuf {
	struct evbuffer *out;
	struct json_writer w;
};

static void jbuf_init(struct jbuf *j)
{
	j->out = evbuffer_new();
	assert_non_null(j->out);
	json_init(&j->w, j->out);
}

static void jbuf_expect(struct jbuf *j, const char *expected)
{
	assert_int_equal(json_finish(&j->w), 0);
	size_t len = evbuffer_get_length(j->out);
	char *s = calloc(1, len + 1);
	evbuffer_copyout(j->out, s, len);
	assert_string_equal(s, expected);
	free(s);
	evbuffer_free(j->out);
}

static void test_json_document(void **state)
{
	struct jbuf j;
	jbuf_init(&j);
	struct json_writer *w = &j.w;
	json_begin_object(w);
	json_key(w, "version");
	json_uint(w, 17);
	json_key(w, "subscribers");
	json_begin_array(w);
	for (int i = 0; i < 2; i++) {
		json_begin_object(w);
		json_key(w, "site");
		json_string(w, i ? "us-2" : "eu-1");
		json_key(w, "lag");
		json_int(w, -i);
		json_end_object(w);
	}
	json_end_array(w);
	json_key(w, "empty");
	json_begin_array(w);
	json_end_array(w);
	json_key(w, "nested");
	json_begin_array(w);
	json_begin_array(w);
	json_null(w);
	json_end_array(w);
	json_begin_object(w);
	json_end_object(w);
	json_bool(w, true);
	json_bool(w, false);
	json_end_array(w);
	json_key(w, "min");
	json_int(w, INT64_MIN);
	json_key(w, "max");
	json_uint(w, UINT64_MAX);
	json_key(w, "ratio");
	json_double(w, 0.1);
	json_key(w, "big");
	json_double(w, 1e300);
	json_key(w, "nan");
	json_double(w, NAN);
	json_key(w, "inf");
	json_double(w, -INFINITY);
	json_key(w, "nothing");
	json_string(w, NULL);
	json_end_object(w);
	jbuf_expect(&j, "{\"version\":17,\"subscribers\":[{\"site\":\"eu-1\",\"lag\":0},"
	                "{\"site\":\"us-2\",\"lag\":-1}],\"empty\":[],\"nested\":[[null],{},true,"
	                "false],\"min\":-9223372036854775808,\"max\":18446744073709551615,"
	                "\"ratio\":0.1,\"big\":1e+300,\"nan\":null,\"inf\":null,\"nothing\":null}");
}

static void test_json_escaping(void **state)
{
	struct jbuf j;
	jbuf_init(&j);
	json_begin_array(&j.w);
	json_string(&j.w, "quote\" backslash\\ slash/ tab\t nl\n cr\r \x01\x1f del\x7f");
	/* Valid UTF-8 passes through: é, €, U+1F600. */
	json_string(&j.w, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	/* Each byte that is not part of valid UTF-8 becomes U+FFFD: a stray
	 * continuation, an overlong NUL, a surrogate, a truncated sequence,
	 * a byte never used, a code point past U+10FFFF. */
	json_string(&j.w, "a\x80z");
	json_string(&j.w, "\xc0\x80");
	json_string(&j.w, "\xed\xa0\x80");
	json_string(&j.w, "\xe2\x82");
	json_string(&j.w, "\xff");
	json_string(&j.w, "\xf4\x90\x80\x80");
	json_stringn(&j.w, "nul\0inside", 10);
	json_stringn(&j.w, "cut", 2);
	json_begin_object(&j.w);
	json_key(&j.w, "k\"\n\xfe");
	json_string(&j.w, "");
	json_end_object(&j.w);
	json_end_array(&j.w);
	jbuf_expect(&j, "[\"quote\\\" backslash\\\\ slash/ tab\\u0009 nl\\u000a cr\\u000d "
	                "\\u0001\\u001f del\x7f\","
	                "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\","
	                "\"a\\ufffdz\","
	                "\"\\ufffd\\ufffd\","
	                "\"\\ufffd\\ufffd\\ufffd\","
	                "\"\\ufffd\\ufffd\","
	                "\"\\ufffd\","
	                "\"\\ufffd\\ufffd\\ufffd\\ufffd\","
	                "\"nul\\u0000inside\","
	                "\"cu\","
	                "{\"k\\\"\\u000a\\ufffd\":\"\"}]");
}

static void test_json_misuse(void **state)
{
	struct evbuffer *out = evbuffer_new();
	struct json_writer w;

	/* A value where a key is due. */
	json_init(&w, out);
	json_begin_object(&w);
	assert_int_equal(json_uint(&w, 1), -EINVAL);
	/* The error sticks: nothing more is written. */
	size_t len = evbuffer_get_length(out);
	assert_int_equal(json_end_object(&w), -EINVAL);
	assert_int_equal(evbuffer_get_length(out), len);
	assert_int_equal(json_finish(&w), -EINVAL);

	/* A key in an array, or at top level. */
	json_init(&w, out);
	json_begin_array(&w);
	assert_int_equal(json_key(&w, "k"), -EINVAL);
	json_init(&w, out);
	assert_int_equal(json_key(&w, "k"), -EINVAL);

	/* Two keys in a row; a key without its value at the end. */
	json_init(&w, out);
	json_begin_object(&w);
	json_key(&w, "a");
	assert_int_equal(json_key(&w, "b"), -EINVAL);
	json_init(&w, out);
	json_begin_object(&w);
	json_key(&w, "a");
	assert_int_equal(json_end_object(&w), -EINVAL);

	/* Mismatched and unbalanced ends. */
	json_init(&w, out);
	json_begin_object(&w);
	assert_int_equal(json_end_array(&w), -EINVAL);
	json_init(&w, out);
	assert_int_equal(json_end_object(&w), -EINVAL);
	json_init(&w, out);
	json_begin_array(&w);
	assert_int_equal(json_finish(&w), -EINVAL);

	/* Nothing written; two top-level values. */
	json_init(&w, out);
	assert_int_equal(json_finish(&w), -EINVAL);
	json_init(&w, out);
	assert_int_equal(json_null(&w), 0);
	assert_int_equal(json_finish(&w), 0);
	assert_int_equal(json_null(&w), -EINVAL);

	/* Depth. */
	json_init(&w, out);
	for (int i = 0; i < JSON_MAX_DEPTH; i++)
		assert_int_equal(json_begin_array(&w), 0);
	assert_int_equal(json_begin_array(&w), -EINVAL);
	evbuffer_free(out);
}

/* --- admin listener ------------------------------------------------------ */

struct status_src {
	uint64_t version;
	const char *name;
};

static int status_handler(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	struct status_src *src = arg;
	struct json_writer w;
	json_init(&w, body);
	json_begin_object(&w);
	json_key(&w, "version");
	json_uint(&w, src->version);
	json_key(&w, "name");
	json_string(&w, src->name);
	json_end_object(&w);
	if (json_finish(&w) < 0)
		return 500;
	*ret_content_type = JSON_CONTENT_TYPE;
	return 200;
}

static int healthz_handler(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	evbuffer_add_printf(body, "draining\n");
	return 503;
}

static int broken_handler(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	evbuffer_add_printf(body, "should not be seen");
	return 42;
}

/* One HTTP exchange: the raw request is written, and everything up to the
 * server's close is the response. */
struct exchange {
	struct event_base *base;
	struct evbuffer *response;
	bool closed;
	bool error;
};

static void exchange_read(struct bufferevent *bev, void *arg)
{
	struct exchange *x = arg;
	evbuffer_add_buffer(x->response, bufferevent_get_input(bev));
}

static void exchange_event(struct bufferevent *bev, short what, void *arg)
{
	struct exchange *x = arg;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		evbuffer_add_buffer(x->response, bufferevent_get_input(bev));
		x->closed = true;
		x->error = (what & BEV_EVENT_ERROR) != 0;
		event_base_loopexit(x->base, NULL);
	}
}

struct response {
	int status;
	char headers[4096]; /* header lines, "\r\n" separated, lowercased names */
	char *body;
	size_t body_len;
	bool complete;
};

static void response_free(struct response *r)
{
	free(r->body);
}

/* Returns the value of header name (lowercase) in r, or NULL. */
static const char *header(struct response *r, const char *name, char *buf, size_t len)
{
	size_t n = strlen(name);
	for (char *line = r->headers; *line != '\0';) {
		char *end = strstr(line, "\r\n");
		size_t ll = end != NULL ? (size_t)(end - line) : strlen(line);
		if (ll > n && strncmp(line, name, n) == 0 && line[n] == ':') {
			const char *v = line + n + 1;
			while (*v == ' ')
				v++;
			snprintf(buf, len, "%.*s", (int)(ll - (size_t)(v - line)), v);
			return buf;
		}
		if (end == NULL)
			break;
		line = end + 2;
	}
	return NULL;
}

static void http_raw(uint16_t port, struct event_base *base, const char *request,
                     struct response *r)
{
	struct exchange x = {.base = base, .response = evbuffer_new()};
	struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bufferevent_setcb(bev, exchange_read, NULL, exchange_event, &x);
	bufferevent_enable(bev, EV_READ);
	assert_int_equal(bufferevent_socket_connect(bev, (struct sockaddr *)&sin, sizeof(sin)), 0);
	bufferevent_write(bev, request, strlen(request));
	struct timeval limit = {5, 0};
	event_base_loopexit(base, &limit);
	event_base_dispatch(base);
	assert_true(x.closed);
	bufferevent_free(bev);

	memset(r, 0, sizeof(*r));
	size_t len = evbuffer_get_length(x.response);
	char *raw = calloc(1, len + 1);
	evbuffer_remove(x.response, raw, len);
	evbuffer_free(x.response);
	char *hend = strstr(raw, "\r\n\r\n");
	if (len == 0 || hend == NULL) {
		free(raw);
		r->status = -1;
		return;
	}
	assert_int_equal(sscanf(raw, "HTTP/1.1 %d ", &r->status), 1);
	char *first = strstr(raw, "\r\n") + 2;
	size_t hlen = hend >= first ? (size_t)(hend - first) : 0;
	assert_true(hlen < sizeof(r->headers));
	memcpy(r->headers, first, hlen);
	/* Header names are case-insensitive; lowercase them for lookup. */
	for (char *line = r->headers; line != NULL; line = strstr(line, "\r\n")) {
		line += line == r->headers ? 0 : 2;
		for (char *p = line; *p != '\0' && *p != ':' && *p != '\r'; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p += 'a' - 'A';
	}
	r->body_len = len - (size_t)(hend + 4 - raw);
	r->body = malloc(r->body_len + 1);
	memcpy(r->body, hend + 4, r->body_len);
	r->body[r->body_len] = '\0';
	r->complete = true;
	free(raw);
}

static void http(uint16_t port, struct event_base *base, const char *method, const char *target,
                 struct response *r)
{
	char req[512];
	snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
	         method, target);
	http_raw(port, base, req, r);
}

struct fixture {
	struct event_base *base;
	struct admin *admin;
	struct metrics *metrics;
	struct status_src status;
	uint16_t port;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->base = event_base_new();
	char *err = NULL;
	f->admin = admin_new(f->base, "127.0.0.1", 0, &err);
	if (f->admin == NULL) {
		fprintf(stderr, "admin_new: %s\n", err);
		free(err);
		return -1;
	}
	f->port = admin_port(f->admin);
	f->status = (struct status_src){.version = 17, .name = "eu-1 \"primary\""};
	f->metrics = metrics_new();
	metric_set(metrics_gauge(f->metrics, "mp_version", "Current version."), 17);
	if (admin_route(f->admin, "/status", status_handler, &f->status) < 0 ||
	    admin_route(f->admin, "/healthz", healthz_handler, NULL) < 0 ||
	    admin_route(f->admin, "/metrics", metrics_handler, f->metrics) < 0 ||
	    admin_route(f->admin, "/broken", broken_handler, NULL) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	admin_free(f->admin);
	metrics_free(f->metrics);
	event_base_free(f->base);
	free(f);
	return 0;
}

static const char status_body[] = "{\"version\":17,\"name\":\"eu-1 \\\"primary\\\"\"}";

static void test_get_route(void **state)
{
	struct fixture *f = *state;
	struct response r;
	char v[256];
	assert_int_not_equal(f->port, 0);
	http(f->port, f->base, "GET", "/status", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(header(&r, "content-type", v, sizeof(v)), "application/json");
	assert_string_equal(header(&r, "cache-control", v, sizeof(v)), "no-store");
	assert_string_equal(r.body, status_body);
	char clen[32];
	snprintf(clen, sizeof(clen), "%zu", strlen(status_body));
	assert_string_equal(header(&r, "content-length", v, sizeof(v)), clen);
	response_free(&r);

	/* The query string does not take part in routing. */
	http(f->port, f->base, "GET", "/status?verbose=1&x=%20", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, status_body);
	response_free(&r);

	/* Nor does the scheme and authority of an absolute-form target. */
	http(f->port, f->base, "GET", "http://localhost/status", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, status_body);
	response_free(&r);

	http(f->port, f->base, "GET", "/metrics", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(header(&r, "content-type", v, sizeof(v)),
	                    "text/plain; version=0.0.4; charset=utf-8");
	assert_string_equal(r.body, "# HELP mp_version Current version.\n"
	                            "# TYPE mp_version gauge\n"
	                            "mp_version 17\n");
	response_free(&r);

	/* Handlers choose the status; bodies default to plain text. */
	http(f->port, f->base, "GET", "/healthz", &r);
	assert_int_equal(r.status, 503);
	assert_string_equal(header(&r, "content-type", v, sizeof(v)), "text/plain; charset=utf-8");
	assert_string_equal(r.body, "draining\n");
	response_free(&r);

	/* A handler returning nonsense yields a 500, not its body. */
	http(f->port, f->base, "GET", "/broken", &r);
	assert_int_equal(r.status, 500);
	assert_null(strstr(r.body, "should not be seen"));
	response_free(&r);
}

static void test_not_found(void **state)
{
	struct fixture *f = *state;
	struct response r;
	char v[256];
	const char *targets[] = {"/", "/nope", "/status/", "/Status", "/statusx", "/status%20"};
	for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
		http(f->port, f->base, "GET", targets[i], &r);
		assert_int_equal(r.status, 404);
		assert_string_equal(header(&r, "content-type", v, sizeof(v)),
		                    "text/plain; charset=utf-8");
		assert_string_equal(r.body, "not found\n");
		response_free(&r);
	}
}

static void test_method_not_allowed(void **state)
{
	struct fixture *f = *state;
	struct response r;
	char v[256];
	const char *methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		http(f->port, f->base, methods[i], "/status", &r);
		assert_int_equal(r.status, 405);
		assert_string_equal(header(&r, "allow", v, sizeof(v)), "GET, HEAD");
		assert_string_equal(r.body, "method not allowed\n");
		response_free(&r);
	}
	/* With a body, too. */
	http_raw(f->port, f->base,
	         "POST /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	         "Content-Length: 5\r\n\r\nhello",
	         &r);
	assert_int_equal(r.status, 405);
	response_free(&r);
}

static void test_head(void **state)
{
	struct fixture *f = *state;
	struct response r;
	char v[256];
	http(f->port, f->base, "HEAD", "/status", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(header(&r, "content-type", v, sizeof(v)), "application/json");
	/* The length GET would send, and no body. */
	char clen[32];
	snprintf(clen, sizeof(clen), "%zu", strlen(status_body));
	assert_string_equal(header(&r, "content-length", v, sizeof(v)), clen);
	assert_int_equal(r.body_len, 0);
	response_free(&r);

	http(f->port, f->base, "HEAD", "/nope", &r);
	assert_int_equal(r.status, 404);
	assert_int_equal(r.body_len, 0);
	response_free(&r);
}

static void test_keepalive(void **state)
{
	struct fixture *f = *state;
	struct response r;
	/* Two requests on one connection; the second closes it. */
	http_raw(f->port, f->base,
	         "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	         "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	         &r);
	assert_int_equal(r.status, 503);
	assert_non_null(strstr(r.body, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(r.body, status_body));
	response_free(&r);
}

static void test_limits(void **state)
{
	struct fixture *f = *state;
	struct response r;
	/* Headers past the cap are refused before any handler runs. */
	size_t n = ADMIN_MAX_HEADERS_SIZE + 100;
	static const char head[] = "GET /status HTTP/1.1\r\nHost: x\r\nX-Big: ";
	static const char tail[] = "\r\nConnection: close\r\n\r\n";
	char *req = malloc(sizeof(head) + n + sizeof(tail));
	assert_non_null(req);
	memcpy(req, head, sizeof(head) - 1);
	memset(req + sizeof(head) - 1, 'a', n);
	memcpy(req + sizeof(head) - 1 + n, tail, sizeof(tail));
	http_raw(f->port, f->base, req, &r);
	assert_int_equal(r.status, 400);
	assert_null(strstr(r.body, "version"));
	response_free(&r);

	/* So is a body past its cap. */
	sprintf(req,
	        "POST /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	        "Content-Length: %d\r\n\r\n",
	        ADMIN_MAX_BODY_SIZE * 4);
	http_raw(f->port, f->base, req, &r);
	assert_int_equal(r.status, 413);
	response_free(&r);

	/* Garbage. */
	http_raw(f->port, f->base, "NONSENSE\r\n\r\n", &r);
	assert_int_equal(r.status, 400);
	response_free(&r);
	free(req);

	/* The listener still serves afterwards. */
	http(f->port, f->base, "GET", "/status", &r);
	assert_int_equal(r.status, 200);
	response_free(&r);
}

/* A client that starts a request and goes quiet is dropped after the idle
 * timeout, so that it cannot hold a connection forever. */
static void test_idle_timeout(void **state)
{
	struct fixture *f = *state;
	struct exchange x = {.base = f->base, .response = evbuffer_new()};
	struct bufferevent *bev = bufferevent_socket_new(f->base, -1, BEV_OPT_CLOSE_ON_FREE);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(f->port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bufferevent_setcb(bev, exchange_read, NULL, exchange_event, &x);
	bufferevent_enable(bev, EV_READ);
	assert_int_equal(bufferevent_socket_connect(bev, (struct sockaddr *)&sin, sizeof(sin)), 0);
	bufferevent_write(bev, "GET /status HTTP/1.1\r\n", 22);
	struct timeval start, end, limit = {ADMIN_TIMEOUT_SEC + 5, 0};
	gettimeofday(&start, NULL);
	event_base_loopexit(f->base, &limit);
	event_base_dispatch(f->base);
	gettimeofday(&end, NULL);
	assert_true(x.closed);
	double elapsed = (double)(end.tv_sec - start.tv_sec) + (end.tv_usec - start.tv_usec) / 1e6;
	assert_true(elapsed >= ADMIN_TIMEOUT_SEC - 1 && elapsed < ADMIN_TIMEOUT_SEC + 3);
	/* Nothing was served. */
	size_t len = evbuffer_get_length(x.response);
	char *body = calloc(1, len + 1);
	evbuffer_remove(x.response, body, len);
	assert_null(strstr(body, "version"));
	free(body);
	evbuffer_free(x.response);
	bufferevent_free(bev);
}

static void test_routes(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(admin_route(f->admin, "/status", status_handler, NULL), -EEXIST);
	assert_int_equal(admin_route(f->admin, "status", status_handler, NULL), -EINVAL);
	assert_int_equal(admin_route(f->admin, "/x", NULL, NULL), -EINVAL);
	assert_int_equal(admin_route(f->admin, NULL, status_handler, NULL), -EINVAL);
}

static void test_bind_error(void **state)
{
	struct fixture *f = *state;
	char *err = NULL;
	struct admin *a = admin_new(f->base, "127.0.0.1", f->port, &err);
	assert_null(a);
	char expected[128];
	snprintf(expected, sizeof(expected), "admin 127.0.0.1:%u: Address already in use", f->port);
	assert_string_equal(err, expected);
	free(err);

	err = NULL;
	assert_null(admin_new(f->base, "192.0.2.1", 7180, &err));
	assert_string_equal(err, "admin 192.0.2.1:7180: Cannot assign requested address");
	free(err);

	/* IPv6 addresses are bracketed in messages. */
	err = NULL;
	struct admin *a6 = admin_new(f->base, "::1", 0, &err);
	if (a6 != NULL) {
		uint16_t p6 = admin_port(a6);
		assert_null(admin_new(f->base, "::1", p6, &err));
		snprintf(expected, sizeof(expected), "admin [::1]:%u: Address already in use", p6);
		assert_string_equal(err, expected);
		admin_free(a6);
	} else {
		/* No IPv6 here. */
		assert_int_equal(strncmp(err, "admin [::1]:0: ", 15), 0);
	}
	free(err);

	err = NULL;
	assert_null(admin_new(f->base, "no-such-host.invalid", 7180, &err));
	assert_non_null(err);
	assert_int_equal(strncmp(err, "admin no-such-host.invalid:7180: ", 33), 0);
	free(err);

	/* Without ret_err. */
	assert_null(admin_new(f->base, "127.0.0.1", f->port, NULL));
}

static void test_free_stops_listening(void **state)
{
	struct event_base *base = event_base_new();
	struct admin *a = admin_new(base, "127.0.0.1", 0, NULL);
	assert_non_null(a);
	uint16_t port = admin_port(a);
	assert_int_equal(admin_route(a, "/healthz", healthz_handler, NULL), 0);
	admin_free(a);
	admin_free(NULL);

	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), -1);
	assert_int_equal(errno, ECONNREFUSED);
	close(fd);

	/* And the port can be had again at once. */
	a = admin_new(base, "127.0.0.1", port, NULL);
	assert_non_null(a);
	admin_free(a);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_json_document),
	    cmocka_unit_test(test_json_escaping),
	    cmocka_unit_test(test_json_misuse),
	    cmocka_unit_test_setup_teardown(test_get_route, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_method_not_allowed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_head, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idle_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bind_error, setup, teardown),
	    cmocka_unit_test(test_free_stops_listening),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
