/* mp-fallback-reader: reads the same few files through libmirrorplane over
 * and over while a test takes the mirror away, and reports how the library
 * fell back to the primary and came back.
 *
 *   mp-fallback-reader --primary H:P --mirror H:P --files /fb/f0,/fb/f1,...
 *                      [--timeout-ms T] [--probe-ms P] [--read-deadline-ms R]
 *                      [--duration-s D] [--interval-ms I] [--log FILE]
 *   mp-fallback-reader --setup --primary H:P --mirror H:P --files ...
 *
 * Each file's name ends with a number N and its content is "fallback-N\n".
 * --setup puts them (through the library) and prints {"setup":n,
 * "version":V}. Otherwise the tool first checks every file once at the
 * primary alone, then for D seconds (or until SIGINT or SIGTERM) does
 * mp_stat and mp_read of each file in turn, pausing I ms after each file,
 * on one handle (timeout T, probe_interval P, connect_timeout 200ms,
 * read_deadline R, by default T/4), recording for every call its wall-clock
 * start (CLOCK_REALTIME ns), latency, the server that answered and whether
 * it succeeded with the right answer. --log writes one line per call:
 *   START_NS LATENCY_US mirror|primary|- 1|0
 * The last line on stdout is a JSON summary: reads, errors (failed calls or
 * wrong answers), slow (latency >= 0.8 T), by_server, max_latency_us and
 * switches [{"time_ns","from","to"}] where the serving role changed. Exit 0
 * without errors, 1 with, 2 for bad arguments. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mirrorplane/mirrorplane.h"

#define FILES_MAX   256
#define CONTENT_CAP 4096

enum role { ROLE_NONE, ROLE_MIRROR, ROLE_PRIMARY };
static const char *const role_names[] = {"-", "mirror", "primary"};

struct options {
	const char *primary;
	const char *mirror;
	long timeout_ms, probe_ms, read_deadline_ms, interval_ms;
	long duration_s;
	const char *log_path;
	bool setup;
	char *files[FILES_MAX];
	char expect[FILES_MAX][32];
	int nfiles;
};

static struct options opt = {.timeout_ms = 1000,
                             .probe_ms = 200,
                             .read_deadline_ms = -1,
                             .duration_s = 20,
                             .interval_ms = 5};

struct record {
	int64_t start_ns; /* CLOCK_REALTIME */
	int64_t latency_ns;
	enum role role;
	bool ok;
};

static struct record *records;
static size_t nrecords, caprecords;

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static int64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: mp-fallback-reader [--setup] --primary HOST:PORT --mirror HOST:PORT "
	        "--files /A/f0,/A/f1,... [--timeout-ms T] [--probe-ms P] [--read-deadline-ms R] "
	        "[--duration-s D] [--interval-ms I] [--log FILE]\n");
	exit(2);
}

static long number(const char *flag, const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "mp-fallback-reader: %s '%s': want a number in %ld..%ld\n", flag, s,
		        lo, hi);
		exit(2);
	}
	return v;
}

/* "/fb/f3" must hold "fallback-3\n": the number its name ends with. */
static void add_file(char *path)
{
	size_t len = strlen(path), d = len;
	while (d > 0 && isdigit((unsigned char)path[d - 1]))
		d--;
	if (path[0] != '/' || d == len || len - d > 9 || opt.nfiles == FILES_MAX) {
		fprintf(stderr,
		        "mp-fallback-reader: --files: '%s': want absolute paths whose names end "
		        "with a number (at most %d files)\n",
		        path, FILES_MAX);
		exit(2);
	}
	snprintf(opt.expect[opt.nfiles], sizeof(opt.expect[0]), "fallback-%s\n", path + d);
	opt.files[opt.nfiles++] = path;
}

static void parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--setup") == 0) {
			opt.setup = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		char *v = argv[++i];
		if (strcmp(a, "--primary") == 0)
			opt.primary = v;
		else if (strcmp(a, "--mirror") == 0)
			opt.mirror = v;
		else if (strcmp(a, "--timeout-ms") == 0)
			opt.timeout_ms = number(a, v, 10, 600000);
		else if (strcmp(a, "--probe-ms") == 0)
			opt.probe_ms = number(a, v, 10, 600000);
		else if (strcmp(a, "--read-deadline-ms") == 0)
			opt.read_deadline_ms = number(a, v, 0, 60000);
		else if (strcmp(a, "--duration-s") == 0)
			opt.duration_s = number(a, v, 0, 86400);
		else if (strcmp(a, "--interval-ms") == 0)
			opt.interval_ms = number(a, v, 0, 60000);
		else if (strcmp(a, "--log") == 0)
			opt.log_path = v;
		else if (strcmp(a, "--files") == 0)
			for (char *save = NULL, *p = strtok_r(v, ",", &save); p != NULL;
			     p = strtok_r(NULL, ",", &save))
				add_file(p);
		else
			usage();
	}
	if (opt.primary == NULL || opt.mirror == NULL || opt.nfiles == 0)
		usage();
	if (opt.read_deadline_ms < 0)
		opt.read_deadline_ms = opt.timeout_ms / 4;
}

static int open_handle(bool with_mirror, mp_client **ret, mp_error *err)
{
	char timeout[32], probe[32], deadline[32];
	snprintf(timeout, sizeof(timeout), "%ldms", opt.timeout_ms);
	snprintf(probe, sizeof(probe), "%ldms", opt.probe_ms);
	snprintf(deadline, sizeof(deadline), "%ldms", opt.read_deadline_ms);
	mp_config *cfg = NULL;
	int r = mp_config_new(&cfg, err);
	if (r == 0)
		r = mp_config_add(cfg, "primary", opt.primary, err);
	if (r == 0 && with_mirror)
		r = mp_config_add(cfg, "mirror", opt.mirror, err);
	if (r == 0)
		r = mp_config_set(cfg, "timeout", timeout, err);
	if (r == 0)
		r = mp_config_set(cfg, "probe_interval", probe, err);
	if (r == 0)
		r = mp_config_set(cfg, "connect_timeout", "200ms", err);
	if (r == 0)
		r = mp_config_set(cfg, "read_deadline", deadline, err);
	if (r == 0)
		r = mp_client_open(cfg, ret, err);
	mp_config_free(cfg);
	return r;
}

struct content {
	char data[CONTENT_CAP];
	size_t len;
	bool too_long;
};

static int content_sink(void *arg, const void *data, size_t len)
{
	struct content *ct = arg;
	if (ct->len + len > sizeof(ct->data)) {
		ct->too_long = true;
		return -EFBIG;
	}
	memcpy(ct->data + ct->len, data, len);
	ct->len += len;
	return 0;
}

/* Reads file i and compares it with what it must hold; 0 or -1 with a
 * message in why. */
static int read_file(mp_client *c, int i, mp_call *call, char *why, size_t whylen)
{
	struct content ct = {.len = 0};
	mp_error err = {0};
	int r = mp_read(c, opt.files[i], 0, 0, content_sink, &ct, NULL, call, &err);
	if (r < 0) {
		snprintf(why, whylen, "read %.300s: %s", opt.files[i], err.message);
		return -1;
	}
	size_t want = strlen(opt.expect[i]);
	if (ct.len != want || memcmp(ct.data, opt.expect[i], want) != 0) {
		snprintf(why, whylen,
		         "read %.300s at version %" PRIu64
		         " (%.95s): %zu bytes '%.*s', not '%.31s'",
		         opt.files[i], call->version, call->served_by, ct.len,
		         (int)(ct.len < 64 ? ct.len : 64), ct.data, opt.expect[i]);
		return -1;
	}
	return 0;
}

static int stat_file(mp_client *c, int i, mp_call *call, char *why, size_t whylen)
{
	mp_node n = {0};
	mp_error err = {0};
	int r = mp_stat(c, opt.files[i], call, &n, &err);
	if (r < 0) {
		snprintf(why, whylen, "stat %.300s: %s", opt.files[i], err.message);
		return -1;
	}
	size_t want = strlen(opt.expect[i]);
	r = 0;
	if (n.type != MP_TYPE_FILE || n.size != want) {
		snprintf(why, whylen,
		         "stat %.300s at version %" PRIu64 " (%s): a %s of %" PRIu64
		         " bytes, not a file of %zu",
		         opt.files[i], call->version, call->served_by, mp_type_name(n.type), n.size,
		         want);
		r = -1;
	}
	mp_node_clear(&n);
	return r;
}

static int setup(void)
{
	mp_client *c = NULL;
	mp_error err = {0};
	mp_call call = {0};
	if (open_handle(false, &c, &err) < 0) {
		fprintf(stderr, "mp-fallback-reader: %s\n", err.message);
		return 1;
	}
	int rc = 0;
	for (int i = 0; i < opt.nfiles && rc == 0; i++) {
		char dir[4096];
		snprintf(dir, sizeof(dir), "%s", opt.files[i]);
		char *slash = strrchr(dir, '/');
		*slash = '\0';
		if ((dir[0] != '\0' && mp_mkdir(c, dir, 0755, true, &call, &err) < 0) ||
		    mp_put_buffer(c, opt.expect[i], strlen(opt.expect[i]), opt.files[i], NULL,
		                  &call, &err) < 0) {
			fprintf(stderr, "mp-fallback-reader: setup of %s: %s\n", opt.files[i],
			        err.message);
			rc = 1;
		}
	}
	if (rc == 0)
		printf("{\"setup\":%d,\"version\":%" PRIu64 "}\n", opt.nfiles, call.version);
	mp_client_close(c);
	return rc;
}

/* Every file once at the primary alone: a wrong setup is not a fallback. */
static int check_at_primary(void)
{
	mp_client *c = NULL;
	mp_error err = {0};
	if (open_handle(false, &c, &err) < 0) {
		fprintf(stderr, "mp-fallback-reader: %s\n", err.message);
		return -1;
	}
	int rc = 0;
	for (int i = 0; i < opt.nfiles; i++) {
		char why[1024];
		mp_call call = {0};
		if (read_file(c, i, &call, why, sizeof(why)) < 0) {
			fprintf(stderr, "mp-fallback-reader: at the primary: %s\n", why);
			rc = -1;
		}
	}
	mp_client_close(c);
	return rc;
}

static enum role role_of(const mp_call *call)
{
	if (strncmp(call->served_by, "mirror", 6) == 0)
		return ROLE_MIRROR;
	if (strncmp(call->served_by, "primary", 7) == 0)
		return ROLE_PRIMARY;
	return ROLE_NONE;
}

static int record(int64_t start_ns, int64_t latency_ns, enum role role, bool ok)
{
	if (nrecords == caprecords) {
		size_t cap = caprecords ? caprecords * 2 : 4096;
		struct record *p = realloc(records, cap * sizeof(*p));
		if (p == NULL)
			return -ENOMEM;
		records = p;
		caprecords = cap;
	}
	records[nrecords++] = (struct record){start_ns, latency_ns, role, ok};
	return 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !stop_requested)
		;
}

static void summary(uint64_t errors)
{
	int64_t slow_ns = opt.timeout_ms * 800000; /* 0.8 T */
	uint64_t slow = 0, by[3] = {0};
	int64_t max_latency = 0;
	for (size_t i = 0; i < nrecords; i++) {
		const struct record *r = &records[i];
		slow += r->latency_ns >= slow_ns;
		by[r->role]++;
		if (r->latency_ns > max_latency)
			max_latency = r->latency_ns;
	}
	printf("{\"reads\":%zu,\"errors\":%" PRIu64 ",\"slow\":%" PRIu64
	       ",\"slow_threshold_us\":%" PRId64 ",\"max_latency_us\":%" PRId64
	       ",\"by_server\":{\"mirror\":%" PRIu64 ",\"primary\":%" PRIu64 ",\"none\":%" PRIu64
	       "},\"switches\":[",
	       nrecords, errors, slow, slow_ns / 1000, max_latency / 1000, by[ROLE_MIRROR],
	       by[ROLE_PRIMARY], by[ROLE_NONE]);
	enum role last = ROLE_NONE;
	bool first = true;
	for (size_t i = 0; i < nrecords; i++) {
		const struct record *r = &records[i];
		if (r->role == ROLE_NONE)
			continue;
		if (last != ROLE_NONE && r->role != last) {
			printf("%s{\"time_ns\":%" PRId64 ",\"from\":\"%s\",\"to\":\"%s\"}",
			       first ? "" : ",", r->start_ns, role_names[last],
			       role_names[r->role]);
			first = false;
		}
		last = r->role;
	}
	printf("]}\n");
}

static int write_log(void)
{
	FILE *f = fopen(opt.log_path, "w");
	if (f == NULL) {
		fprintf(stderr, "mp-fallback-reader: %s: %s\n", opt.log_path, strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < nrecords; i++) {
		const struct record *r = &records[i];
		fprintf(f, "%" PRId64 " %" PRId64 " %s %d\n", r->start_ns, r->latency_ns / 1000,
		        role_names[r->role], r->ok ? 1 : 0);
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "mp-fallback-reader: %s: %s\n", opt.log_path, strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	if (opt.setup)
		return setup();
	/* A test ends the run when it has seen what it wanted, summary and all. */
	struct sigaction sa = {.sa_handler = on_stop_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (check_at_primary() < 0)
		return 1;
	mp_client *c = NULL;
	mp_error err = {0};
	if (open_handle(true, &c, &err) < 0) {
		fprintf(stderr, "mp-fallback-reader: %s\n", err.message);
		return 1;
	}
	uint64_t errors = 0;
	int64_t end = now_ns(CLOCK_MONOTONIC) + (int64_t)opt.duration_s * 1000000000;
	for (int i = 0; now_ns(CLOCK_MONOTONIC) < end && !stop_requested;
	     i = (i + 1) % opt.nfiles) {
		for (int step = 0; step < 2; step++) {
			char why[1024];
			mp_call call = {0};
			int64_t start = now_ns(CLOCK_REALTIME), t0 = now_ns(CLOCK_MONOTONIC);
			int r = step == 0 ? stat_file(c, i, &call, why, sizeof(why))
			                  : read_file(c, i, &call, why, sizeof(why));
			int64_t latency = now_ns(CLOCK_MONOTONIC) - t0;
			/* served_by is written on success only. */
			enum role role = r == 0 || call.served_by[0] ? role_of(&call) : ROLE_NONE;
			if (r < 0) {
				errors++;
				fprintf(stderr, "error: %" PRId64 " %s\n", start, why);
			}
			if (record(start, latency, role, r == 0) < 0) {
				fprintf(stderr, "mp-fallback-reader: out of memory\n");
				mp_client_close(c);
				return 1;
			}
		}
		if (opt.interval_ms > 0)
			sleep_ms(opt.interval_ms);
	}
	mp_client_close(c);
	int rc = errors > 0 ? 1 : 0;
	if (opt.log_path != NULL && write_log() < 0)
		rc = 1;
	summary(errors);
	free(records);
	return rc;
}
