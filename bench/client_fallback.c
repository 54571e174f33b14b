/* client_fallback: a reader that keeps reading while its mirror dies, for
 * bench/run-client-bench to time how long an outage costs a caller.
 *
 * One handle, configured as a site client (the mirror first, then the
 * primary) with the timeouts under test. With --setup it first puts FILES
 * small files of SIZE bytes (a pattern that depends on the file and the
 * offset) under PREFIX through the primary and waits until the mirror has
 * them. Then it loops over them until SIGTERM or SIGINT: mp_stat, then
 * mp_read of the whole file, whose bytes must be the pattern.
 *
 * Each iteration appends one line to the log file, flushed at once:
 *
 *     START_NS END_NS RC STAT_SERVER READ_SERVER FALLBACKS
 *
 * START/END on CLOCK_REALTIME (so the driver can compare them with the time
 * it sent a signal), RC 0 or the negative errno of the first call that
 * failed, the servers "m" (mirror) or "p" (primary) that answered the stat
 * and the read's metadata ("-" when the call failed), FALLBACKS the
 * servers given up on during both calls. At the end it prints one JSON
 * object: reads, errors and their messages, and where reads were served. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mirrorplane/mirrorplane.h>

#include "samples.h"

#define MAX_FILES       64
#define MAX_SIZE        (1 << 20)
#define MAX_SETS        16
#define MAX_ERROR_KINDS 8
#define PATH_MAX_LEN    256

static atomic_bool stopping;

struct opts {
	const char *primary, *mirror, *prefix, *log;
	const char *timeout, *probe_interval, *connect_timeout;
	long files, size;
	bool setup;
	const char *set[MAX_SETS];
	int nset;
};

struct errors {
	long count;
	char msgs[MAX_ERROR_KINDS][MP_ERROR_MAX];
	long msg_count[MAX_ERROR_KINDS];
	int n;
};

static void errors_add(struct errors *e, const char *msg)
{
	e->count++;
	int k;
	for (k = 0; k < e->n && strcmp(e->msgs[k], msg) != 0; k++)
		;
	if (k == e->n && e->n < MAX_ERROR_KINDS)
		snprintf(e->msgs[e->n++], MP_ERROR_MAX, "%s", msg);
	if (k < e->n)
		e->msg_count[k]++;
}

static unsigned char pattern(long file, long off)
{
	return (unsigned char)(file * 131 + off * 7 + off / 251);
}

static int64_t real_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct buf {
	unsigned char *p;
	size_t len, cap;
};

static int buf_sink(void *arg, const void *data, size_t len)
{
	struct buf *b = arg;
	if (len > b->cap - b->len)
		return -EFBIG;
	memcpy(b->p + b->len, data, len);
	b->len += len;
	return 0;
}

static char server_letter(const mp_call *call)
{
	if (strncmp(call->served_by, "mirror", 6) == 0)
		return 'm';
	if (strncmp(call->served_by, "primary", 7) == 0)
		return 'p';
	return '?';
}

static void *signal_thread(void *arg)
{
	sigset_t *set = arg;
	int sig;
	sigwait(set, &sig);
	atomic_store(&stopping, true);
	return NULL;
}

static void set_option(mp_config *cfg, const char *name, const char *value)
{
	mp_error err;
	if (mp_config_set(cfg, name, value, &err) < 0)
		bench_die("%s=%s: %s", name, value, err.message);
}

static mp_client *open_handle(const struct opts *o)
{
	mp_config *cfg;
	mp_client *c;
	mp_error err;
	if (mp_config_new(&cfg, &err) < 0)
		bench_die("config: %s", err.message);
	set_option(cfg, "primary", o->primary);
	set_option(cfg, "mirror", o->mirror);
	set_option(cfg, "session_file", "-");
	set_option(cfg, "timeout", o->timeout);
	set_option(cfg, "probe_interval", o->probe_interval);
	set_option(cfg, "connect_timeout", o->connect_timeout);
	for (int i = 0; i < o->nset; i++) {
		char name[128];
		const char *eq = strchr(o->set[i], '=');
		if (eq == NULL || (size_t)(eq - o->set[i]) >= sizeof(name))
			bench_die("-o %s: want NAME=VALUE", o->set[i]);
		snprintf(name, sizeof(name), "%.*s", (int)(eq - o->set[i]), o->set[i]);
		set_option(cfg, name, eq + 1);
	}
	if (mp_client_open(cfg, &c, &err) < 0)
		bench_die("mp_client_open: %s", err.message);
	mp_config_free(cfg);
	return c;
}

static void file_path(const struct opts *o, long i, char *out, size_t cap)
{
	snprintf(out, cap, "%s/f%02ld", o->prefix, i);
}

static void setup_files(const struct opts *o, mp_client *c)
{
	unsigned char *data = malloc((size_t)o->size);
	char path[PATH_MAX_LEN];
	mp_call call = {0};
	mp_error err;
	if (data == NULL)
		bench_die("out of memory");
	for (long i = 0; i < o->files; i++) {
		for (long k = 0; k < o->size; k++)
			data[k] = pattern(i, k);
		file_path(o, i, path, sizeof(path));
		if (mp_put_buffer(c, data, (size_t)o->size, path, NULL, &call, &err) < 0)
			bench_die("put %s: %s", path, err.message);
	}
	free(data);
	int64_t t0 = bench_mono_ns();
	for (;;) {
		mp_versions v;
		if (mp_version(c, &v, &err) == 0 && v.mirror >= call.version)
			break;
		if (bench_mono_ns() - t0 > 60 * 1000000000ll)
			bench_die("the mirror did not reach version %" PRIu64 " within 60 s",
			          call.version);
		nanosleep(&(struct timespec){0, 10000000}, NULL);
	}
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: client_fallback --primary HOST:PORT --mirror HOST:PORT --log FILE\n"
	        "                       [--setup] [--prefix /fallback] [--files 4] [--size 4096]\n"
	        "                       [--timeout 1000ms] [--probe-interval 200ms]\n"
	        "                       [--connect-timeout 200ms] [-o NAME=VALUE]...\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct opts o = {.prefix = "/fallback",
	                 .files = 4,
	                 .size = 4096,
	                 .timeout = "1000ms",
	                 .probe_interval = "200ms",
	                 .connect_timeout = "200ms"};
	static const struct option lopts[] = {
	    {"primary", required_argument, NULL, 'p'},
	    {"mirror", required_argument, NULL, 'm'},
	    {"log", required_argument, NULL, 'l'},
	    {"prefix", required_argument, NULL, 'P'},
	    {"files", required_argument, NULL, 'f'},
	    {"size", required_argument, NULL, 'z'},
	    {"timeout", required_argument, NULL, 'T'},
	    {"probe-interval", required_argument, NULL, 'I'},
	    {"connect-timeout", required_argument, NULL, 'C'},
	    {"setup", no_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {0, 0, 0, 0},
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "o:h", lopts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			o.primary = optarg;
			break;
		case 'm':
			o.mirror = optarg;
			break;
		case 'l':
			o.log = optarg;
			break;
		case 'P':
			o.prefix = optarg;
			break;
		case 'f':
			o.files = atol(optarg);
			break;
		case 'z':
			o.size = atol(optarg);
			break;
		case 'T':
			o.timeout = optarg;
			break;
		case 'I':
			o.probe_interval = optarg;
			break;
		case 'C':
			o.connect_timeout = optarg;
			break;
		case 's':
			o.setup = true;
			break;
		case 'o':
			if (o.nset == MAX_SETS)
				bench_die("at most %d -o options", MAX_SETS);
			o.set[o.nset++] = optarg;
			break;
		default:
			usage();
		}
	}
	if (o.primary == NULL || o.mirror == NULL || o.log == NULL || optind != argc)
		usage();
	if (o.files < 1 || o.files > MAX_FILES || o.size < 1 || o.size > MAX_SIZE)
		bench_die("--files 1..%d, --size 1..%d", MAX_FILES, MAX_SIZE);

	/* Signals go to one thread, so that no library call sees EINTR. */
	static sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_t sig_th;
	if (pthread_create(&sig_th, NULL, signal_thread, &set) != 0)
		bench_die("pthread_create failed");
	pthread_detach(sig_th);

	FILE *log = fopen(o.log, "w");
	if (log == NULL)
		bench_die("%s: %s", o.log, strerror(errno));
	mp_client *c = open_handle(&o);
	if (o.setup)
		setup_files(&o, c);

	struct buf b = {.p = malloc((size_t)o.size), .cap = (size_t)o.size};
	if (b.p == NULL)
		bench_die("out of memory");
	struct errors errs = {0};
	long reads = 0, stat_at[2] = {0}, read_at[2] = {0}, fallbacks = 0;
	char path[PATH_MAX_LEN];
	for (long i = 0; !atomic_load(&stopping); i++) {
		long f = i % o.files;
		file_path(&o, f, path, sizeof(path));
		mp_call sc = {0}, rc_call = {0};
		mp_node n;
		mp_error err;
		char ss = '-', rs = '-';
		b.len = 0;
		int64_t t0 = real_ns();
		int rc = mp_stat(c, path, &sc, &n, &err);
		if (rc == 0) {
			ss = server_letter(&sc);
			if (n.type != MP_TYPE_FILE || n.size != (uint64_t)o.size) {
				rc = -EIO;
				snprintf(err.message, sizeof(err.message),
				         "%s: stat says %s of %" PRIu64 " bytes", path,
				         mp_type_name(n.type), n.size);
			}
			mp_node_clear(&n);
		}
		if (rc == 0) {
			rc = mp_read(c, path, 0, 0, buf_sink, &b, NULL, &rc_call, &err);
			if (rc == 0)
				rs = server_letter(&rc_call);
		}
		int64_t t1 = real_ns();
		if (rc == 0) {
			bool same = b.len == (size_t)o.size;
			for (long k = 0; same && k < o.size; k++)
				same = b.p[k] == pattern(f, k);
			if (!same) {
				rc = -EIO;
				snprintf(err.message, sizeof(err.message),
				         "%s: read %zu bytes that are not the file's", path, b.len);
			}
		}
		reads++;
		fallbacks += sc.fallbacks + rc_call.fallbacks;
		if (rc < 0)
			errors_add(&errs, err.message);
		else {
			stat_at[ss == 'p']++;
			read_at[rs == 'p']++;
		}
		fprintf(log, "%" PRId64 " %" PRId64 " %d %c %c %u\n", t0, t1, rc, ss, rs,
		        sc.fallbacks + rc_call.fallbacks);
		fflush(log);
	}
	fclose(log);
	mp_client_close(c);
	free(b.p);

	printf("{\"reads\": %ld, \"errors\": %ld, \"stat_served_by\": {\"mirror\": %ld, "
	       "\"primary\": %ld}, \"read_served_by\": {\"mirror\": %ld, \"primary\": %ld}, "
	       "\"fallbacks\": %ld, \"error_messages\": [",
	       reads, errs.count, stat_at[0], stat_at[1], read_at[0], read_at[1], fallbacks);
	for (int k = 0; k < errs.n; k++) {
		printf("%s{\"count\": %ld, \"message\": ", k ? ", " : "", errs.msg_count[k]);
		bench_json_str(stdout, errs.msgs[k]);
		printf("}");
	}
	printf("]}\n");
	return 0;
}
