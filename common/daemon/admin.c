#include "admin.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "log.h"

/* How long accepting stays paused when the process is out of descriptors. */
#define ADMIN_ACCEPT_PAUSE_SEC 1

struct admin_route {
	struct admin_route *next;
	char *path;
	admin_handler_fn fn;
	void *arg;
};

struct admin {
	struct evhttp *http;
	struct evconnlistener *listener; /* owned by http */
	struct event *resume;            /* re-enables accept after EMFILE */
	struct admin_route *routes;
	uint16_t port;
};

static const char *admin_reason(int code)
{
	switch (code) {
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return code < 300 ? "OK" : code < 500 ? "Client Error" : "Server Error";
	}
}

static void admin_reply_text(struct evhttp_request *req, int code, const char *text)
{
	struct evbuffer *body = evhttp_request_get_output_buffer(req);
	struct evkeyvalq *hdrs = evhttp_request_get_output_headers(req);
	evhttp_add_header(hdrs, "Content-Type", ADMIN_TEXT_CONTENT_TYPE);
	if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
		evbuffer_add(body, text, strlen(text));
	evhttp_send_reply(req, code, admin_reason(code), NULL);
}

static struct admin_route *admin_find(struct admin *a, const char *path)
{
	for (struct admin_route *r = a->routes; r != NULL; r = r->next)
		if (strcmp(r->path, path) == 0)
			return r;
	return NULL;
}

static void admin_dispatch(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;

	if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		admin_reply_text(req, 405, "method not allowed\n");
		return;
	}
	if (path == NULL) {
		admin_reply_text(req, 400, "bad request\n");
		return;
	}
	/* An absolute-form target without a path ("GET http://host") means "/". */
	struct admin_route *route = admin_find(a, *path != '\0' ? path : "/");
	if (route == NULL) {
		admin_reply_text(req, 404, "not found\n");
		return;
	}

	struct evbuffer *body = evhttp_request_get_output_buffer(req);
	struct evkeyvalq *hdrs = evhttp_request_get_output_headers(req);
	const char *ctype = ADMIN_TEXT_CONTENT_TYPE;
	int code = route->fn(route->arg, body, &ctype);
	if (code < 200 || code > 599) {
		log_warn("admin: handler for %s returned status %d", route->path, code);
		evbuffer_drain(body, evbuffer_get_length(body));
		ctype = ADMIN_TEXT_CONTENT_TYPE;
		evbuffer_add_printf(body, "internal error\n");
		code = 500;
	}
	evhttp_add_header(hdrs, "Content-Type", ctype != NULL ? ctype : ADMIN_TEXT_CONTENT_TYPE);
	/* Status and metrics are live views: a cached copy would mislead. */
	evhttp_add_header(hdrs, "Cache-Control", "no-store");
	if (method == EVHTTP_REQ_HEAD) {
		/* HEAD answers with the length GET would have, without the body;
		 * evhttp leaves a Content-Length that is already set alone. */
		char len[24];
		snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
		evbuffer_drain(body, evbuffer_get_length(body));
		evhttp_add_header(hdrs, "Content-Length", len);
	}
	evhttp_send_reply(req, code, admin_reason(code), NULL);
}

static void admin_resume(evutil_socket_t fd, short what, void *arg)
{
	struct admin *a = arg;
	evconnlistener_enable(a->listener);
}

/* Out of descriptors, accept() fails at once on every loop iteration and the
 * listener would spin: pause it for a second instead, as relayd does. */
static void admin_accept_error(struct evconnlistener *listener, void *arg)
{
	struct admin *a = arg;
	int err = EVUTIL_SOCKET_ERROR();
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		log_warn("admin: accept: %s; pausing for %d s", strerror(err),
		         ADMIN_ACCEPT_PAUSE_SEC);
		evconnlistener_disable(listener);
		struct timeval tv = {ADMIN_ACCEPT_PAUSE_SEC, 0};
		evtimer_add(a->resume, &tv);
		return;
	}
	log_warn("admin: accept: %s", strerror(err));
}

static void admin_format_addr(char *buf, size_t len, const char *host, uint16_t port)
{
	if (host == NULL)
		snprintf(buf, len, "*:%u", port);
	else if (strchr(host, ':') != NULL)
		snprintf(buf, len, "[%s]:%u", host, port);
	else
		snprintf(buf, len, "%s:%u", host, port);
}

static void admin_set_err(char **ret_err, const char *host, uint16_t port, const char *reason)
{
	char addr[300];
	if (ret_err == NULL)
		return;
	admin_format_addr(addr, sizeof(addr), host, port);
	if (asprintf(ret_err, "admin %s: %s", addr, reason) < 0)
		*ret_err = NULL;
}

/* Binds and listens on the first address of host that works. Returns the
 * socket or -errno (-EAI_* codes are returned as -ENXIO with *ret_gai set). */
static int admin_listen(const char *host, uint16_t port, int *ret_gai)
{
	struct addrinfo hints = {
	    .ai_family = AF_UNSPEC,
	    .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	};
	struct addrinfo *res;
	char service[8];
	snprintf(service, sizeof(service), "%u", port);
	int gai = getaddrinfo(host, service, &hints, &res);
	if (gai != 0) {
		*ret_gai = gai;
		return -ENXIO;
	}
	int err = -EADDRNOTAVAIL;
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		                ai->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		/* A restarted daemon must not wait out TIME_WAIT of its predecessor. */
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0) {
			freeaddrinfo(res);
			return fd;
		}
		err = -errno;
		close(fd);
	}
	freeaddrinfo(res);
	return err;
}

struct admin *admin_new(struct event_base *base, const char *host, uint16_t port, char **ret_err)
{
	struct admin *a = calloc(1, sizeof(*a));
	if (a == NULL) {
		admin_set_err(ret_err, host, port, strerror(ENOMEM));
		return NULL;
	}
	int gai = 0;
	int fd = admin_listen(host, port, &gai);
	if (fd < 0) {
		admin_set_err(ret_err, host, port, gai != 0 ? gai_strerror(gai) : strerror(-fd));
		free(a);
		return NULL;
	}

	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0)
		a->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
		                                         : ((struct sockaddr_in *)&ss)->sin_port);

	a->http = evhttp_new(base);
	a->resume = evtimer_new(base, admin_resume, a);
	struct evhttp_bound_socket *bound = NULL;
	if (a->http != NULL && a->resume != NULL)
		bound = evhttp_accept_socket_with_handle(a->http, fd);
	if (bound == NULL) {
		admin_set_err(ret_err, host, port, strerror(ENOMEM));
		close(fd);
		admin_free(a);
		return NULL;
	}
	a->listener = evhttp_bound_socket_get_listener(bound);
	evconnlistener_set_error_cb(a->listener, admin_accept_error);

	evhttp_set_timeout(a->http, ADMIN_TIMEOUT_SEC);
	evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS_SIZE);
	evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY_SIZE);
	/* Let every method through to admin_dispatch, which answers 405 with
	 * Allow; evhttp itself would answer 501 without it. */
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                        EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	                                        EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(a->http, admin_dispatch, a);
	return a;
}

int admin_route(struct admin *a, const char *path, admin_handler_fn fn, void *arg)
{
	if (a == NULL || path == NULL || path[0] != '/' || fn == NULL)
		return -EINVAL;
	if (admin_find(a, path) != NULL)
		return -EEXIST;
	struct admin_route *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->path = strdup(path);
	if (r->path == NULL) {
		free(r);
		return -ENOMEM;
	}
	r->fn = fn;
	r->arg = arg;
	r->next = a->routes;
	a->routes = r;
	return 0;
}

uint16_t admin_port(const struct admin *a)
{
	return a->port;
}

void admin_free(struct admin *a)
{
	if (a == NULL)
		return;
	if (a->http != NULL)
		evhttp_free(a->http);
	if (a->resume != NULL)
		event_free(a->resume);
	while (a->routes != NULL) {
		struct admin_route *r = a->routes;
		a->routes = r->next;
		free(r->path);
		free(r);
	}
	free(a);
}
