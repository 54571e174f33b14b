#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct netaddr_listener {
	struct evconnlistener *lev;
	struct event *resume; /* re-enables accept a second after EMFILE */
	evconnlistener_cb cb;
	void *arg;
	char name[NETADDR_HOST_MAX + 8];
};

int netaddr_split(const char *hostport, char *host, size_t hostlen, uint16_t *ret_port)
{
	const char *colon;
	const char *h = hostport;
	size_t hlen;
	if (hostport[0] == '[') {
		const char *close = strchr(hostport, ']');
		if (close == NULL || close[1] != ':')
			return -EINVAL;
		h = hostport + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(hostport, ':');
		if (colon == NULL)
			return -EINVAL;
		hlen = (size_t)(colon - hostport);
	}
	if (hlen == 0 || hlen >= hostlen)
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno != 0 || port > 65535)
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*ret_port = (uint16_t)port;
	return 0;
}

static char *errf(const char *fmt, const char *a, const char *b)
{
	char *s = NULL;
	if (asprintf(&s, fmt, a, b) < 0)
		return NULL;
	return s;
}

int netaddr_resolve(const char *hostport, struct sockaddr_storage *ret, socklen_t *ret_len,
                    char **ret_err)
{
	char host[NETADDR_HOST_MAX];
	uint16_t port;
	if (netaddr_split(hostport, host, sizeof(host), &port) < 0) {
		if (ret_err)
			*ret_err = errf("'%s': expected HOST:PORT%s", hostport, "");
		return -EINVAL;
	}
	char portstr[8];
	snprintf(portstr, sizeof(portstr), "%u", port);
	struct addrinfo hints = {
	    .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res = NULL;
	int r = getaddrinfo(host, portstr, &hints, &res);
	if (r != 0 || res == NULL) {
		if (ret_err)
			*ret_err = errf("'%s': %s", hostport, gai_strerror(r));
		return -EINVAL;
	}
	memcpy(ret, res->ai_addr, res->ai_addrlen);
	*ret_len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct netaddr_listener *l = arg;
	evconnlistener_enable(l->lev);
}

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *ctx)
{
	struct netaddr_listener *l = ctx;
	l->cb(lev, fd, sa, salen, l->arg);
}

static void error_cb(struct evconnlistener *lev, void *arg)
{
	struct netaddr_listener *l = arg;
	int err = EVUTIL_SOCKET_ERROR();
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		/* Out of descriptors: stop accepting for a second instead of
		 * spinning on a listener that is always readable. */
		log_warn("%s: accept: %s; pausing accept for 1 s", l->name, strerror(err));
		evconnlistener_disable(lev);
		struct timeval tv = {1, 0};
		evtimer_add(l->resume, &tv);
		return;
	}
	log_warn("%s: accept: %s", l->name, strerror(err));
}

struct netaddr_listener *netaddr_listen(struct event_base *base, const char *hostport,
                                        evconnlistener_cb cb, void *arg, char **ret_err)
{
	return netaddr_listen_shared(base, hostport, false, cb, arg, ret_err);
}

struct netaddr_listener *netaddr_listen_shared(struct event_base *base, const char *hostport,
                                               bool reuse_port, evconnlistener_cb cb, void *arg,
                                               char **ret_err)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	if (netaddr_resolve(hostport, &ss, &sslen, ret_err) < 0)
		return NULL;
	struct netaddr_listener *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	snprintf(l->name, sizeof(l->name), "%s", hostport);
	l->cb = cb;
	l->arg = arg;
	l->lev = evconnlistener_new_bind(base, accept_cb, l,
	                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
	                                     LEV_OPT_CLOSE_ON_EXEC |
	                                     (reuse_port ? LEV_OPT_REUSEABLE_PORT : 0),
	                                 1024, (struct sockaddr *)&ss, (int)sslen);
	if (l->lev == NULL) {
		if (ret_err)
			*ret_err = errf("listen on %s: %s", hostport, strerror(errno));
		free(l);
		return NULL;
	}
	l->resume = evtimer_new(base, resume_cb, l);
	evconnlistener_set_error_cb(l->lev, error_cb);
	return l;
}

void netaddr_listener_free(struct netaddr_listener *l)
{
	if (l == NULL)
		return;
	if (l->resume)
		event_free(l->resume);
	evconnlistener_free(l->lev);
	free(l);
}

void netaddr_listener_pause(struct netaddr_listener *l)
{
	evconnlistener_disable(l->lev);
}

uint16_t netaddr_listener_port(const struct netaddr_listener *l)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(evconnlistener_get_fd(l->lev), (struct sockaddr *)&ss, &len) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

void netaddr_peer_name(evutil_socket_t fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	uint16_t port = 0;
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(buf, len, "%s:%u", host, port);
}
