/* pglag: visibility lag of PostgreSQL streaming replication, measured the
 * way lagprobe measures mp-mirror's, for a side-by-side figure.
 *
 * Each writer has a connection to the primary and a connection ("poller")
 * to a hot standby. A writer INSERTs a row (autocommit, one 100-byte text
 * value, a prepared statement); as soon as the INSERT's result is read —
 * the commit returned — its poller runs the prepared
 * SELECT 1 FROM lag_probe WHERE id = $1 on the standby, again and again
 * (one in flight) until it returns the row; rows of a writer are polled
 * for in commit order (the standby replays them in that order).
 *
 * lag = the time the successful SELECT's result is read minus the time the
 * INSERT's result was read, both on CLOCK_MONOTONIC right after the bytes
 * were read from the socket.
 *
 * Phases as in lagprobe: "steady" (one writer, one INSERT in flight, sent
 * at a steady RATE on a timer), then "burst" (WRITERS writers as fast as
 * they go). Output: one JSON object with the same fields as lagprobe's.
 *
 * libpq's asynchronous API and ppoll(): one thread for every connection. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "samples.h"

#define MAX_WRITERS     256
#define MAX_ERROR_KINDS 8
#define ID_STRIDE       1000000000LL /* writer i's rows have ids i * ID_STRIDE + k */
#define SETUP_TIMEOUT_S 30

enum phase { PH_STEADY, PH_BURST, PH_DRAIN };

struct probe {
	int64_t id;
	int64_t commit_ns;
	enum phase phase;
};

struct poller {
	PGconn *c;
	bool busy; /* a SELECT in flight */
	bool want_write;
	struct probe *q; /* ring, in commit order */
	size_t head, count, cap;
	int64_t rx_ns;
};

struct writer {
	PGconn *c;
	unsigned index;
	int64_t next_seq;
	bool busy;
	bool want_write;
	bool committed; /* the result of the INSERT in flight was read */
	int64_t inflight_id;
	int64_t sent_ns;
	enum phase sent_phase;
	int64_t rx_ns;
	struct poller *p;
};

struct phase_stats {
	const char *name;
	unsigned writers;
	int64_t start_ns, end_ns;
	uint64_t writes, late, polls;
	struct samples write_lat, lag;
};

struct error_kind {
	char message[256];
	uint64_t count;
};

struct pg_run {
	const char *primary, *standby;
	double rate, steady_s, burst_s;
	unsigned nwriters;
	struct writer *writers;
	struct poller *pollers;
	struct phase_stats ph[2];
	uint64_t errors, other_errors;
	struct error_kind kinds[MAX_ERROR_KINDS];
	unsigned nkinds;
	char synchronous_commit[64], synchronous_standby_names[256], server_version[64];
};

static volatile sig_atomic_t interrupted;

static void note_error(struct pg_run *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note_error(struct pg_run *g, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	size_t n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	g->errors++;
	for (unsigned i = 0; i < g->nkinds; i++) {
		if (strcmp(g->kinds[i].message, msg) == 0) {
			g->kinds[i].count++;
			return;
		}
	}
	if (g->nkinds == MAX_ERROR_KINDS) {
		g->other_errors++;
		return;
	}
	snprintf(g->kinds[g->nkinds].message, sizeof(g->kinds[0].message), "%s", msg);
	g->kinds[g->nkinds++].count = 1;
}

/* ---- set-up (blocking) ---- */

static PGconn *connect_to(const char *conninfo, const char *what)
{
	PGconn *c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK)
		bench_die("%s: cannot connect (%s): %s", what, conninfo, PQerrorMessage(c));
	return c;
}

static void exec_ok(PGconn *c, const char *sql, const char *what)
{
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		bench_die("%s: %s: %s", what, sql, PQerrorMessage(c));
	PQclear(r);
}

static void query_value(PGconn *c, const char *sql, char *buf, size_t len, const char *what)
{
	PGresult *r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
		bench_die("%s: %s: %s", what, sql, PQerrorMessage(c));
	snprintf(buf, len, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
}

static void prepare(PGconn *c, const char *name, const char *sql, const char *what)
{
	PGresult *r = PQprepare(c, name, sql, 1, NULL);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		bench_die("%s: PREPARE %s: %s", what, sql, PQerrorMessage(c));
	PQclear(r);
}

static void setup(struct pg_run *g)
{
	char what[32], buf[64];
	PGconn *admin = connect_to(g->primary, "primary");
	exec_ok(admin, "SET client_min_messages = warning", "primary");
	query_value(admin, "SHOW synchronous_commit", g->synchronous_commit,
	            sizeof(g->synchronous_commit), "primary");
	query_value(admin, "SHOW synchronous_standby_names", g->synchronous_standby_names,
	            sizeof(g->synchronous_standby_names), "primary");
	query_value(admin, "SHOW server_version", g->server_version, sizeof(g->server_version),
	            "primary");
	exec_ok(admin, "DROP TABLE IF EXISTS lag_probe", "primary");
	exec_ok(admin, "CREATE TABLE lag_probe (id bigint PRIMARY KEY, v text NOT NULL)",
	        "primary");
	PQfinish(admin);

	PGconn *sb = connect_to(g->standby, "standby");
	query_value(sb, "SELECT pg_is_in_recovery()", buf, sizeof(buf), "standby");
	if (strcmp(buf, "t") != 0)
		bench_die("standby: pg_is_in_recovery() is '%s': not a standby", buf);
	/* The table reaches the standby through the stream too. */
	int64_t deadline = bench_mono_ns() + (int64_t)SETUP_TIMEOUT_S * 1000000000;
	for (;;) {
		query_value(sb, "SELECT to_regclass('public.lag_probe') IS NOT NULL", buf,
		            sizeof(buf), "standby");
		if (strcmp(buf, "t") == 0)
			break;
		if (bench_mono_ns() > deadline)
			bench_die("standby: table lag_probe did not appear within %d s",
			          SETUP_TIMEOUT_S);
		usleep(1000);
	}
	PQfinish(sb);

	for (unsigned i = 0; i < g->nwriters; i++) {
		struct writer *w = &g->writers[i];
		struct poller *p = &g->pollers[i];
		w->index = i;
		w->p = p;
		snprintf(what, sizeof(what), "writer %u", i);
		w->c = connect_to(g->primary, what);
		prepare(w->c, "ins", "INSERT INTO lag_probe (id, v) VALUES ($1, repeat('x', 100))",
		        what);
		snprintf(what, sizeof(what), "poller %u", i);
		p->c = connect_to(g->standby, what);
		prepare(p->c, "sel", "SELECT 1 FROM lag_probe WHERE id = $1", what);
		if (PQsetnonblocking(w->c, 1) != 0 || PQsetnonblocking(p->c, 1) != 0)
			bench_die("%s: cannot make the connection non-blocking", what);
	}
}

/* ---- requests ---- */

static bool send_prepared(PGconn *c, const char *stmt, int64_t id, bool *want_write)
{
	char idbuf[24];
	const char *vals[1] = {idbuf};
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, id);
	if (!PQsendQueryPrepared(c, stmt, 1, vals, NULL, NULL, 0))
		return false;
	int r = PQflush(c);
	if (r < 0)
		return false;
	*want_write = r == 1;
	return true;
}

static void send_insert(struct pg_run *g, struct writer *w, enum phase ph)
{
	w->inflight_id = (int64_t)w->index * ID_STRIDE + ++w->next_seq;
	w->sent_phase = ph;
	w->committed = false;
	w->sent_ns = bench_mono_ns();
	if (!send_prepared(w->c, "ins", w->inflight_id, &w->want_write))
		bench_die("writer %u: %s", w->index, PQerrorMessage(w->c));
	w->busy = true;
}

static struct probe *queue_push(struct poller *p)
{
	if (p->count == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		struct probe *q = bench_xrealloc(NULL, cap * sizeof(*q));
		for (size_t i = 0; i < p->count; i++)
			q[i] = p->q[(p->head + i) % p->cap];
		free(p->q);
		p->q = q;
		p->head = 0;
		p->cap = cap;
	}
	struct probe *e = &p->q[(p->head + p->count) % p->cap];
	p->count++;
	return e;
}

static void send_poll(struct pg_run *g, struct poller *p, unsigned index)
{
	if (p->busy || p->count == 0)
		return;
	struct probe *e = &p->q[p->head];
	g->ph[e->phase].polls++;
	if (!send_prepared(p->c, "sel", e->id, &p->want_write))
		bench_die("poller %u: %s", index, PQerrorMessage(p->c));
	p->busy = true;
}

/* ---- results ---- */

static void writer_input(struct pg_run *g, struct writer *w)
{
	if (!PQconsumeInput(w->c))
		bench_die("writer %u: %s", w->index, PQerrorMessage(w->c));
	w->rx_ns = bench_mono_ns();
	while (w->busy && !PQisBusy(w->c)) {
		PGresult *r = PQgetResult(w->c);
		if (r == NULL) {
			w->busy = false;
			break;
		}
		struct phase_stats *ps = &g->ph[w->sent_phase];
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			note_error(g, "primary INSERT: %s", PQresultErrorMessage(r));
		} else if (!w->committed) {
			w->committed = true;
			ps->writes++;
			samples_add(&ps->write_lat, w->rx_ns - w->sent_ns);
			struct probe *e = queue_push(w->p);
			e->id = w->inflight_id;
			e->commit_ns = w->rx_ns;
			e->phase = w->sent_phase;
			send_poll(g, w->p, w->index);
		}
		PQclear(r);
	}
}

static void poller_input(struct pg_run *g, struct poller *p, unsigned index)
{
	if (!PQconsumeInput(p->c))
		bench_die("poller %u: %s", index, PQerrorMessage(p->c));
	p->rx_ns = bench_mono_ns();
	while (p->busy && !PQisBusy(p->c)) {
		PGresult *r = PQgetResult(p->c);
		if (r == NULL) {
			p->busy = false;
			send_poll(g, p, index);
			break;
		}
		struct probe *e = &p->q[p->head];
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			note_error(g, "standby SELECT: %s", PQresultErrorMessage(r));
			p->head = (p->head + 1) % p->cap;
			p->count--;
		} else if (PQntuples(r) == 1) {
			samples_add(&g->ph[e->phase].lag, p->rx_ns - e->commit_ns);
			p->head = (p->head + 1) % p->cap;
			p->count--;
		}
		PQclear(r);
	}
}

/* ---- the run ---- */

static bool all_answered(const struct pg_run *g)
{
	for (unsigned i = 0; i < g->nwriters; i++)
		if (g->writers[i].busy || g->pollers[i].busy || g->pollers[i].count != 0)
			return false;
	return true;
}

static void run(struct pg_run *g)
{
	unsigned n = g->nwriters;
	struct pollfd *fds = bench_xrealloc(NULL, 2 * n * sizeof(*fds));
	int64_t interval = (int64_t)(1e9 / g->rate);
	int64_t t0 = bench_mono_ns();
	int64_t steady_end = t0 + (int64_t)(g->steady_s * 1e9);
	int64_t burst_end = steady_end + (int64_t)(g->burst_s * 1e9);
	int64_t drain_end = 0, next_slot = t0;
	enum phase ph = g->steady_s > 0 ? PH_STEADY : PH_BURST;
	g->ph[PH_STEADY].start_ns = t0;
	g->ph[PH_BURST].start_ns = steady_end;
	for (;;) {
		int64_t now = bench_mono_ns();
		if (interrupted && ph != PH_DRAIN) {
			burst_end = now;
			if (ph == PH_STEADY)
				steady_end = now;
		}
		if (ph == PH_STEADY && now >= steady_end) {
			ph = PH_BURST;
			g->ph[PH_STEADY].end_ns = steady_end;
			g->ph[PH_BURST].start_ns = steady_end;
		}
		if (ph == PH_BURST && now >= burst_end) {
			ph = PH_DRAIN;
			g->ph[PH_BURST].end_ns = burst_end;
			drain_end = now + 60 * (int64_t)1000000000;
		}
		if (ph == PH_DRAIN && all_answered(g))
			break;
		if (ph == PH_DRAIN && now > drain_end) {
			note_error(g, "rows still not visible on the standby 60 s after the last "
			              "commit");
			break;
		}
		int64_t wake = ph == PH_STEADY  ? steady_end
		               : ph == PH_BURST ? burst_end
		                                : drain_end;
		if (ph == PH_STEADY) {
			struct writer *w = &g->writers[0];
			if (!w->busy && now >= next_slot) {
				if (now - next_slot > interval)
					g->ph[PH_STEADY].late++;
				send_insert(g, w, PH_STEADY);
				next_slot += interval;
			}
			if (!w->busy && next_slot < wake)
				wake = next_slot;
		} else if (ph == PH_BURST) {
			for (unsigned i = 0; i < n; i++)
				if (!g->writers[i].busy)
					send_insert(g, &g->writers[i], PH_BURST);
		}
		for (unsigned i = 0; i < n; i++) {
			fds[2 * i].fd = PQsocket(g->writers[i].c);
			fds[2 * i].events = POLLIN | (g->writers[i].want_write ? POLLOUT : 0);
			fds[2 * i].revents = 0;
			fds[2 * i + 1].fd = PQsocket(g->pollers[i].c);
			fds[2 * i + 1].events = POLLIN | (g->pollers[i].want_write ? POLLOUT : 0);
			fds[2 * i + 1].revents = 0;
		}
		now = bench_mono_ns();
		int64_t wait = wake > now ? wake - now : 0;
		struct timespec ts = {(time_t)(wait / 1000000000), (long)(wait % 1000000000)};
		int r = ppoll(fds, 2 * n, &ts, NULL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			bench_die("ppoll: %s", strerror(errno));
		}
		for (unsigned i = 0; i < n; i++) {
			struct poller *p = &g->pollers[i];
			if ((fds[2 * i + 1].revents & POLLOUT) && p->want_write) {
				int f = PQflush(p->c);
				if (f < 0)
					bench_die("poller %u: %s", i, PQerrorMessage(p->c));
				p->want_write = f == 1;
			}
			if (fds[2 * i + 1].revents & (POLLIN | POLLHUP | POLLERR))
				poller_input(g, p, i);
		}
		for (unsigned i = 0; i < n; i++) {
			struct writer *w = &g->writers[i];
			if ((fds[2 * i].revents & POLLOUT) && w->want_write) {
				int f = PQflush(w->c);
				if (f < 0)
					bench_die("writer %u: %s", i, PQerrorMessage(w->c));
				w->want_write = f == 1;
			}
			if (fds[2 * i].revents & (POLLIN | POLLHUP | POLLERR)) {
				writer_input(g, w);
				if (ph == PH_BURST && !w->busy && bench_mono_ns() < burst_end)
					send_insert(g, w, PH_BURST);
			}
		}
	}
	if (g->ph[PH_STEADY].end_ns == 0)
		g->ph[PH_STEADY].end_ns = steady_end;
	free(fds);
}

/* ---- output ---- */

static void print_result(struct pg_run *g, double cpu_s, double wall_s)
{
	FILE *out = stdout;
	fprintf(out, "{\"system\": \"postgresql\", \"mode\": \"poll\", \"server_version\": ");
	bench_json_str(out, g->server_version);
	fprintf(out, ", \"synchronous_commit\": ");
	bench_json_str(out, g->synchronous_commit);
	fprintf(out, ", \"synchronous_standby_names\": ");
	bench_json_str(out, g->synchronous_standby_names);
	fprintf(out, ", \"rate\": %.0f, \"phases\": [", g->rate);
	bool first = true;
	for (int i = 0; i < 2; i++) {
		struct phase_stats *ps = &g->ph[i];
		double secs = (double)(ps->end_ns - ps->start_ns) / 1e9;
		if ((i == PH_STEADY && g->steady_s <= 0) || (i == PH_BURST && g->burst_s <= 0))
			continue;
		fprintf(
		    out,
		    "%s{\"phase\": \"%s\", \"writers\": %u, \"seconds\": %.3f, \"writes\": %" PRIu64
		    ", \"writes_per_sec\": %.1f, \"late_writes\": %" PRIu64
		    ", \"polls_per_write\": %.2f, ",
		    first ? "" : ", ", ps->name, ps->writers, secs, ps->writes,
		    secs > 0 ? (double)ps->writes / secs : 0.0, ps->late,
		    ps->lag.n ? (double)ps->polls / (double)ps->lag.n : 0.0);
		first = false;
		samples_print_json(out, "write_latency_us", &ps->write_lat);
		fprintf(out, ", ");
		samples_print_json(out, "lag_us", &ps->lag);
		fprintf(out, "}");
	}
	fprintf(out,
	        "], \"pglag_cpu_percent\": %.1f, \"errors\": %" PRIu64 ", \"error_messages\": [",
	        wall_s > 0 ? 100.0 * cpu_s / wall_s : 0.0, g->errors);
	for (unsigned i = 0; i < g->nkinds; i++) {
		fprintf(out, "%s{\"count\": %" PRIu64 ", \"message\": ", i ? ", " : "",
		        g->kinds[i].count);
		bench_json_str(out, g->kinds[i].message);
		fputc('}', out);
	}
	if (g->other_errors > 0)
		fprintf(out, "%s{\"count\": %" PRIu64 ", \"message\": \"(other messages)\"}",
		        g->nkinds ? ", " : "", g->other_errors);
	fprintf(out, "]}\n");
	fflush(out);
}

/* ---- command line ---- */

static void usage(FILE *out)
{
	fprintf(out, "usage: pglag --primary CONNINFO --standby CONNINFO [--rate N] [--steady S]\n"
	             "             [--burst S] [--writers N]\n"
	             "\n"
	             "  --primary C   libpq connection string of the primary (the INSERTs)\n"
	             "  --standby C   of the hot standby (the SELECTs)\n"
	             "  --rate N      commits/s of the steady phase (default 1000)\n"
	             "  --steady S    seconds of the steady phase, one writer (default 10)\n"
	             "  --burst S     seconds of the burst phase (default 10)\n"
	             "  --writers N   writers (and pollers) of the burst phase (default 16)\n"
	             "It drops and creates table lag_probe on the primary.\n");
}

static double parse_num(const char *opt, const char *s, double min, double max)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= min) || v > max)
		bench_die("%s '%s': expected a number in %g..%g", opt, s, min, max);
	return v;
}

static void on_signal(int sig)
{
	interrupted = 1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"primary", required_argument, NULL, 'p'}, {"standby", required_argument, NULL, 's'},
	    {"rate", required_argument, NULL, 'r'},    {"steady", required_argument, NULL, 'S'},
	    {"burst", required_argument, NULL, 'b'},   {"writers", required_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
	};
	static struct pg_run gs;
	struct pg_run *g = &gs;
	g->rate = 1000;
	g->steady_s = 10;
	g->burst_s = 10;
	g->nwriters = 16;
	int opt;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			g->primary = optarg;
			break;
		case 's':
			g->standby = optarg;
			break;
		case 'r':
			g->rate = parse_num("--rate", optarg, 1, 1e6);
			break;
		case 'S':
			g->steady_s = parse_num("--steady", optarg, 0, 3600);
			break;
		case 'b':
			g->burst_s = parse_num("--burst", optarg, 0, 3600);
			break;
		case 'w':
			g->nwriters = (unsigned)parse_num("--writers", optarg, 1, MAX_WRITERS);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc || g->primary == NULL || g->standby == NULL) {
		usage(stderr);
		return 2;
	}
	if (g->steady_s <= 0 && g->burst_s <= 0)
		bench_die("--steady and --burst are both 0: nothing to measure");
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	g->writers = calloc(g->nwriters, sizeof(*g->writers));
	g->pollers = calloc(g->nwriters, sizeof(*g->pollers));
	if (g->writers == NULL || g->pollers == NULL)
		bench_die("out of memory");
	g->ph[PH_STEADY].name = "steady";
	g->ph[PH_STEADY].writers = 1;
	g->ph[PH_BURST].name = "burst";
	g->ph[PH_BURST].writers = g->nwriters;
	setup(g);

	struct rusage ru0, ru1;
	getrusage(RUSAGE_SELF, &ru0);
	int64_t w0 = bench_mono_ns();
	run(g);
	int64_t w1 = bench_mono_ns();
	getrusage(RUSAGE_SELF, &ru1);
	double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
	             (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
	             (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
	             (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
	print_result(g, cpu, (double)(w1 - w0) / 1e9);
	for (unsigned i = 0; i < g->nwriters; i++) {
		PQfinish(g->writers[i].c);
		PQfinish(g->pollers[i].c);
		free(g->pollers[i].q);
	}
	for (int i = 0; i < 2; i++) {
		free(g->ph[i].write_lat.v);
		free(g->ph[i].lag.v);
	}
	free(g->writers);
	free(g->pollers);
	if (interrupted)
		return 130;
	return g->errors > 0 ? 3 : 0;
}
