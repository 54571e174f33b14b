/* mp-wanrelay: a TCP relay that makes one inter-region link of the netns
 * test bed behave like a WAN. The kernel here has no netem, so delay and
 * jitter come from here.
 *
 *   mp-wanrelay --map LISTEN=TARGET [--map ...] [--delay-ms D] [--jitter-ms J]
 *               [--rate BPS] [--control PATH] [--seed S]
 *   mp-wanrelay ctl PATH COMMAND [ARG]     (see wanrelay_ctl.h)
 *
 * Every --map is a listener whose connections are relayed to TARGET; all of
 * them share the link's settings. Each chunk of bytes read from one side is
 * held until D ms (plus a uniform 0..J ms, never overtaking the chunk before
 * it) after it was read, then written to the other side, at most BPS bytes
 * per second each way over all connections (libevent rate-limit groups).
 * A stall holds every byte for a while, as a lossy link makes TCP do; a reset
 * closes every connection with an RST. Commands come one a line on the unix
 * socket PATH and are answered with one line, "ok ..." or "error: ...".
 * SIGTERM and SIGINT stop it. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "wanrelay_ctl.h"

#define MAPS_MAX    32
#define QUEUE_HIGH  (4u << 20)   /* bytes held per direction before reading pauses */
#define OUTPUT_HIGH (256u << 10) /* bytes in a socket's output before release pauses */
#define CTL_CLIENTS 16
#define TICK_MS     10

struct chunk {
	TAILQ_ENTRY(chunk) entry;
	int64_t release_ns;
	size_t len;
	unsigned char data[];
};
TAILQ_HEAD(chunk_queue, chunk);

struct relay;
struct conn;

/* One direction of a connection: bytes read from src, held, written to dst. */
struct pipe {
	struct conn *conn;
	struct bufferevent *src, *dst;
	struct chunk_queue queue;
	size_t queued;
	int64_t last_release_ns;
	struct event *timer;
	bool eof;  /* src said EOF */
	bool shut; /* dst was shut down for writing */
	uint64_t *bytes_counter;
};

struct conn {
	LIST_ENTRY(conn) entry;
	struct relay *relay;
	struct bufferevent *a, *b; /* a: the accepted side, b: towards the target */
	struct pipe up, down;      /* up: a -> b, down: b -> a */
};

struct map {
	struct sockaddr_storage target;
	socklen_t target_len;
	struct evconnlistener *listener;
	struct relay *relay;
};

struct relay {
	struct event_base *base;
	uint64_t delay_ms, jitter_ms, rate_bps;
	int64_t stalled_until_ns;
	struct bufferevent_rate_limit_group *group_up, *group_down;
	LIST_HEAD(, conn) conns;
	unsigned nconns;
	uint64_t accepted, bytes_up, bytes_down, resets, stalls;
	struct map maps[MAPS_MAX];
	int nmaps;
	unsigned seed;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void pipe_schedule(struct pipe *p);

static void pipe_clear(struct pipe *p)
{
	struct chunk *c;
	while ((c = TAILQ_FIRST(&p->queue)) != NULL) {
		TAILQ_REMOVE(&p->queue, c, entry);
		free(c);
	}
	p->queued = 0;
	if (p->timer != NULL)
		event_free(p->timer);
	p->timer = NULL;
}

/* Every way a connection ends comes here. rst: close with an RST. */
static void conn_close(struct conn *c, bool rst)
{
	struct bufferevent *ends[2] = {c->a, c->b};
	pipe_clear(&c->up);
	pipe_clear(&c->down);
	for (int i = 0; i < 2; i++) {
		if (ends[i] == NULL)
			continue;
		bufferevent_remove_from_rate_limit_group(ends[i]);
		if (rst) {
			struct linger l = {1, 0};
			evutil_socket_t fd = bufferevent_getfd(ends[i]);
			if (fd >= 0)
				setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
		}
		bufferevent_free(ends[i]);
	}
	LIST_REMOVE(c, entry);
	c->relay->nconns--;
	free(c);
}

/* A pipe whose source ended and whose bytes are all written shuts its
 * destination for writing; when both have, the connection is done. */
static bool conn_maybe_finish(struct conn *c)
{
	struct pipe *ps[2] = {&c->up, &c->down};
	for (int i = 0; i < 2; i++) {
		struct pipe *p = ps[i];
		if (p->eof && !p->shut && TAILQ_EMPTY(&p->queue) &&
		    evbuffer_get_length(bufferevent_get_output(p->dst)) == 0) {
			shutdown(bufferevent_getfd(p->dst), SHUT_WR);
			p->shut = true;
		}
	}
	if (c->up.shut && c->down.shut) {
		conn_close(c, false);
		return true;
	}
	return false;
}

static void pipe_release(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct pipe *p = arg;
	struct relay *r = p->conn->relay;
	int64_t now = now_ns();
	struct evbuffer *out = bufferevent_get_output(p->dst);
	struct chunk *c;
	if (now >= r->stalled_until_ns) {
		while ((c = TAILQ_FIRST(&p->queue)) != NULL && c->release_ns <= now &&
		       evbuffer_get_length(out) < OUTPUT_HIGH) {
			TAILQ_REMOVE(&p->queue, c, entry);
			evbuffer_add(out, c->data, c->len);
			*p->bytes_counter += c->len;
			p->queued -= c->len;
			free(c);
		}
	}
	if (p->queued < QUEUE_HIGH / 2 && !p->eof)
		bufferevent_enable(p->src, EV_READ);
	if (conn_maybe_finish(p->conn))
		return;
	pipe_schedule(p);
}

static void pipe_schedule(struct pipe *p)
{
	struct relay *r = p->conn->relay;
	struct chunk *c = TAILQ_FIRST(&p->queue);
	if (c == NULL)
		return;
	int64_t at = c->release_ns;
	if (at < r->stalled_until_ns)
		at = r->stalled_until_ns;
	int64_t wait = at - now_ns();
	/* An output still full (rate limit, slow reader) is looked at again
	 * on the next tick; its write callback also releases. */
	if (evbuffer_get_length(bufferevent_get_output(p->dst)) >= OUTPUT_HIGH &&
	    wait < TICK_MS * 1000000)
		wait = TICK_MS * 1000000;
	if (wait < 0)
		wait = 0;
	struct timeval tv = {(time_t)(wait / 1000000000), (suseconds_t)(wait % 1000000000 / 1000)};
	evtimer_add(p->timer, &tv);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct pipe *p = bev == c->a ? &c->up : &c->down;
	struct relay *r = c->relay;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);
	if (n == 0)
		return;
	struct chunk *ch = malloc(sizeof(*ch) + n);
	if (ch == NULL) {
		conn_close(c, true);
		return;
	}
	evbuffer_remove(in, ch->data, n);
	ch->len = n;
	int64_t hold = (int64_t)r->delay_ms * 1000000;
	if (r->jitter_ms > 0)
		hold += (int64_t)(rand_r(&r->seed) % (r->jitter_ms * 1000 + 1)) * 1000;
	ch->release_ns = now_ns() + hold;
	/* Jitter reorders no bytes: TCP would not either. */
	if (ch->release_ns < p->last_release_ns)
		ch->release_ns = p->last_release_ns;
	p->last_release_ns = ch->release_ns;
	bool was_empty = TAILQ_EMPTY(&p->queue);
	TAILQ_INSERT_TAIL(&p->queue, ch, entry);
	p->queued += n;
	if (p->queued >= QUEUE_HIGH)
		bufferevent_disable(bev, EV_READ);
	if (was_empty)
		pipe_schedule(p);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	/* Output to this side drained: the pipe writing to it may go on. */
	struct pipe *p = bev == c->b ? &c->up : &c->down;
	if (conn_maybe_finish(c))
		return;
	if (!TAILQ_EMPTY(&p->queue) && !evtimer_pending(p->timer, NULL))
		pipe_schedule(p);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	struct pipe *p = bev == c->a ? &c->up : &c->down;
	if (what & BEV_EVENT_CONNECTED) {
		int one = 1;
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		return;
	}
	if (what & BEV_EVENT_EOF) {
		/* Bytes read with the EOF are still to be relayed. */
		on_read(bev, c);
		p->eof = true;
		bufferevent_disable(bev, EV_READ);
		conn_maybe_finish(c);
		return;
	}
	/* An error on either side: the other side sees an RST, as it would if
	 * the far host had reset. */
	conn_close(c, true);
}

static void pipe_init(struct pipe *p, struct conn *c, struct bufferevent *src,
                      struct bufferevent *dst, uint64_t *counter)
{
	p->conn = c;
	p->src = src;
	p->dst = dst;
	TAILQ_INIT(&p->queue);
	p->bytes_counter = counter;
	p->timer = evtimer_new(c->relay->base, pipe_release, p);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
	(void)l;
	(void)sa;
	(void)salen;
	struct map *m = arg;
	struct relay *r = m->relay;
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		evutil_closesocket(fd);
		return;
	}
	c->relay = r;
	LIST_INSERT_HEAD(&r->conns, c, entry);
	r->nconns++;
	r->accepted++;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->a = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->b = bufferevent_socket_new(r->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (c->a == NULL || c->b == NULL) {
		if (c->a == NULL)
			evutil_closesocket(fd);
		conn_close(c, true);
		return;
	}
	pipe_init(&c->up, c, c->a, c->b, &r->bytes_up);
	pipe_init(&c->down, c, c->b, c->a, &r->bytes_down);
	if (c->up.timer == NULL || c->down.timer == NULL) {
		conn_close(c, true);
		return;
	}
	bufferevent_add_to_rate_limit_group(c->b, r->group_up);
	bufferevent_add_to_rate_limit_group(c->a, r->group_down);
	bufferevent_setcb(c->a, on_read, on_write, on_event, c);
	bufferevent_setcb(c->b, on_read, on_write, on_event, c);
	bufferevent_enable(c->a, EV_READ | EV_WRITE);
	bufferevent_enable(c->b, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(c->b, (struct sockaddr *)&m->target, (int)m->target_len) < 0)
		conn_close(c, true);
}

/* No limit is a very high one on the same tick: a group changed from a
 * limit to EV_RATE_LIMIT_MAX on libevent's default tick stopped writing. */
static struct ev_token_bucket_cfg *rate_cfg(uint64_t rate_bps)
{
	struct timeval tick = {0, TICK_MS * 1000};
	size_t per_tick = rate_bps == 0 ? (size_t)1 << 30 : (size_t)(rate_bps * TICK_MS / 1000);
	if (per_tick == 0)
		per_tick = 1;
	return ev_token_bucket_cfg_new(EV_RATE_LIMIT_MAX, EV_RATE_LIMIT_MAX, per_tick, per_tick * 2,
	                               &tick);
}

static int relay_set_rate(struct relay *r, uint64_t rate_bps)
{
	struct ev_token_bucket_cfg *cfg = rate_cfg(rate_bps);
	if (cfg == NULL)
		return -ENOMEM;
	int rc = 0;
	if (r->group_up == NULL) {
		r->group_up = bufferevent_rate_limit_group_new(r->base, cfg);
		r->group_down = bufferevent_rate_limit_group_new(r->base, cfg);
		if (r->group_up == NULL || r->group_down == NULL)
			rc = -ENOMEM;
	} else if (bufferevent_rate_limit_group_set_cfg(r->group_up, cfg) < 0 ||
	           bufferevent_rate_limit_group_set_cfg(r->group_down, cfg) < 0) {
		rc = -EINVAL;
	}
	ev_token_bucket_cfg_free(cfg);
	if (rc == 0)
		r->rate_bps = rate_bps;
	return rc;
}

static void relay_stall(struct relay *r, uint64_t ms)
{
	r->stalled_until_ns = now_ns() + (int64_t)ms * 1000000;
	r->stalls++;
	/* Chunks already due wait for the end of the stall: reschedule. */
	struct conn *c;
	LIST_FOREACH(c, &r->conns, entry)
	{
		pipe_schedule(&c->up);
		pipe_schedule(&c->down);
	}
}

/* ---- control socket ---- */

static void ctl_answer(struct bufferevent *bev, struct relay *r, const char *line, size_t len)
{
	struct wanrelay_cmd cmd;
	char err[160];
	struct evbuffer *out = bufferevent_get_output(bev);
	if (wanrelay_ctl_parse(line, len, &cmd, err, sizeof(err)) < 0) {
		evbuffer_add_printf(out, "error: %s\n", err);
		return;
	}
	switch (cmd.kind) {
	case WANRELAY_DELAY:
		r->delay_ms = cmd.value;
		break;
	case WANRELAY_JITTER:
		r->jitter_ms = cmd.value;
		break;
	case WANRELAY_RATE:
		if (relay_set_rate(r, cmd.value) < 0) {
			evbuffer_add_printf(out, "error: could not set the rate\n");
			return;
		}
		break;
	case WANRELAY_STALL:
		relay_stall(r, cmd.value);
		break;
	case WANRELAY_RESET: {
		struct conn *c;
		while ((c = LIST_FIRST(&r->conns)) != NULL)
			conn_close(c, true);
		r->resets++;
		break;
	}
	case WANRELAY_STATS:
		break;
	}
	evbuffer_add_printf(out,
	                    "ok delay_ms=%" PRIu64 " jitter_ms=%" PRIu64 " rate_bps=%" PRIu64
	                    " conns=%u accepted=%" PRIu64 " bytes_up=%" PRIu64
	                    " bytes_down=%" PRIu64 " stalls=%" PRIu64 " resets=%" PRIu64 "\n",
	                    r->delay_ms, r->jitter_ms, r->rate_bps, r->nconns, r->accepted,
	                    r->bytes_up, r->bytes_down, r->stalls, r->resets);
}

static void ctl_read(struct bufferevent *bev, void *arg)
{
	struct relay *r = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		size_t len;
		char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
		if (line == NULL)
			break;
		ctl_answer(bev, r, line, len);
		free(line);
	}
	if (evbuffer_get_length(in) > WANRELAY_CTL_LINE_MAX) {
		evbuffer_add_printf(bufferevent_get_output(bev), "error: line too long\n");
		evbuffer_drain(in, evbuffer_get_length(in));
	}
}

static void ctl_event(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	(void)arg;
	bufferevent_free(bev);
}

static void ctl_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                       void *arg)
{
	(void)l;
	(void)sa;
	(void)salen;
	struct relay *r = arg;
	struct bufferevent *bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		evutil_closesocket(fd);
		return;
	}
	bufferevent_setcb(bev, ctl_read, NULL, ctl_event, r);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* ---- command line ---- */

static int resolve(const char *hostport, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	if (colon == NULL || colon == hostport || (size_t)(colon - hostport) >= sizeof(host))
		return -EINVAL;
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = '\0';
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
		return -EINVAL;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int ctl_client(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: mp-wanrelay ctl PATH COMMAND [ARG]\n");
		return 2;
	}
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(argv[2]) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "mp-wanrelay ctl: %s: path too long\n", argv[2]);
		return 2;
	}
	strcpy(sun.sun_path, argv[2]);
	char line[WANRELAY_CTL_LINE_MAX + 2];
	size_t n = 0;
	for (int i = 3; i < argc; i++) {
		int w = snprintf(line + n, sizeof(line) - n, "%s%s", i > 3 ? " " : "", argv[i]);
		if (w < 0 || (size_t)w >= sizeof(line) - n - 1) {
			fprintf(stderr, "mp-wanrelay ctl: command too long\n");
			return 2;
		}
		n += (size_t)w;
	}
	line[n++] = '\n';
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		fprintf(stderr, "mp-wanrelay ctl: %s: %s\n", argv[2], strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	if (write(fd, line, n) != (ssize_t)n) {
		fprintf(stderr, "mp-wanrelay ctl: write: %s\n", strerror(errno));
		close(fd);
		return 1;
	}
	char reply[512];
	size_t got = 0;
	while (got < sizeof(reply) - 1) {
		ssize_t k = read(fd, reply + got, sizeof(reply) - 1 - got);
		if (k <= 0)
			break;
		got += (size_t)k;
		if (memchr(reply, '\n', got) != NULL)
			break;
	}
	close(fd);
	reply[got] = '\0';
	fputs(reply, stdout);
	return strncmp(reply, "ok", 2) == 0 ? 0 : 1;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopexit(arg, NULL);
}

static void usage(FILE *out)
{
	fprintf(out, "usage: mp-wanrelay --map LISTEN=TARGET [--map ...] [--delay-ms D]\n"
	             "                   [--jitter-ms J] [--rate BPS] [--control PATH] [--seed S]\n"
	             "       mp-wanrelay ctl PATH delay|jitter|rate|stall N | reset | stats\n");
}

static int parse_value(const char *cmd, const char *arg, uint64_t *ret)
{
	char line[WANRELAY_CTL_LINE_MAX], err[160];
	struct wanrelay_cmd c;
	snprintf(line, sizeof(line), "%s %s", cmd, arg);
	if (wanrelay_ctl_parse(line, strlen(line), &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "mp-wanrelay: --%s: %s\n", cmd, err);
		return -EINVAL;
	}
	*ret = c.value;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "ctl") == 0)
		return ctl_client(argc, argv);
	static const struct option opts[] = {
	    {"map", required_argument, NULL, 'm'},
	    {"delay-ms", required_argument, NULL, 'd'},
	    {"jitter-ms", required_argument, NULL, 'j'},
	    {"rate", required_argument, NULL, 'r'},
	    {"control", required_argument, NULL, 'c'},
	    {"seed", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	static struct relay r;
	const char *control = NULL;
	const char *listen_at[MAPS_MAX];
	uint64_t rate = 0;
	int opt;
	r.seed = (unsigned)getpid();
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'm': {
			char *eq = strchr(optarg, '=');
			if (r.nmaps == MAPS_MAX || eq == NULL) {
				fprintf(
				    stderr,
				    "mp-wanrelay: --map '%s': want LISTEN=TARGET (at most %d)\n",
				    optarg, MAPS_MAX);
				return 2;
			}
			*eq = '\0';
			listen_at[r.nmaps] = optarg;
			struct map *m = &r.maps[r.nmaps];
			if (resolve(eq + 1, &m->target, &m->target_len) < 0) {
				fprintf(stderr, "mp-wanrelay: --map target '%s': want HOST:PORT\n",
				        eq + 1);
				return 2;
			}
			r.nmaps++;
			break;
		}
		case 'd':
			if (parse_value("delay", optarg, &r.delay_ms) < 0)
				return 2;
			break;
		case 'j':
			if (parse_value("jitter", optarg, &r.jitter_ms) < 0)
				return 2;
			break;
		case 'r':
			if (parse_value("rate", optarg, &rate) < 0)
				return 2;
			break;
		case 'c':
			control = optarg;
			break;
		case 's':
			r.seed = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (r.nmaps == 0 || optind != argc) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	/* Timers to the microsecond (timerfd), not epoll's rounded-up ms. */
	struct event_config *ecfg = event_config_new();
	if (ecfg != NULL) {
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER);
		r.base = event_base_new_with_config(ecfg);
		event_config_free(ecfg);
	}
	if (r.base == NULL || relay_set_rate(&r, rate) < 0) {
		fprintf(stderr, "mp-wanrelay: out of memory\n");
		return 1;
	}
	LIST_INIT(&r.conns);
	for (int i = 0; i < r.nmaps; i++) {
		struct sockaddr_storage ss;
		socklen_t len;
		struct map *m = &r.maps[i];
		m->relay = &r;
		if (resolve(listen_at[i], &ss, &len) < 0) {
			fprintf(stderr, "mp-wanrelay: --map listen '%s': want HOST:PORT\n",
			        listen_at[i]);
			return 2;
		}
		m->listener = evconnlistener_new_bind(r.base, on_accept, m,
		                                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
		                                      128, (struct sockaddr *)&ss, (int)len);
		if (m->listener == NULL) {
			fprintf(stderr, "mp-wanrelay: listen %s: %s\n", listen_at[i],
			        strerror(errno));
			return 1;
		}
	}
	struct evconnlistener *ctl = NULL;
	if (control != NULL) {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		if (strlen(control) >= sizeof(sun.sun_path)) {
			fprintf(stderr, "mp-wanrelay: --control %s: path too long\n", control);
			return 2;
		}
		strcpy(sun.sun_path, control);
		unlink(control);
		ctl = evconnlistener_new_bind(r.base, ctl_accept, &r, LEV_OPT_CLOSE_ON_FREE,
		                              CTL_CLIENTS, (struct sockaddr *)&sun, sizeof(sun));
		if (ctl == NULL) {
			fprintf(stderr, "mp-wanrelay: control %s: %s\n", control, strerror(errno));
			return 1;
		}
	}
	struct event *sigterm = evsignal_new(r.base, SIGTERM, on_signal, r.base);
	struct event *sigint = evsignal_new(r.base, SIGINT, on_signal, r.base);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	fprintf(stderr,
	        "mp-wanrelay: %d map(s), delay %" PRIu64 " ms, jitter %" PRIu64 " ms, rate %" PRIu64
	        " B/s\n",
	        r.nmaps, r.delay_ms, r.jitter_ms, r.rate_bps);
	event_base_dispatch(r.base);
	struct conn *c;
	while ((c = LIST_FIRST(&r.conns)) != NULL)
		conn_close(c, false);
	for (int i = 0; i < r.nmaps; i++)
		evconnlistener_free(r.maps[i].listener);
	if (ctl != NULL) {
		evconnlistener_free(ctl);
		unlink(control);
	}
	event_free(sigterm);
	event_free(sigint);
	bufferevent_rate_limit_group_free(r.group_up);
	bufferevent_rate_limit_group_free(r.group_down);
	event_base_free(r.base);
	return 0;
}
