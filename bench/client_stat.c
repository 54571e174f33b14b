/* client_stat: metadata stat latency through libmirrorplane, at a mirror
 * and at the primary.
 *
 * Two handles on the same cluster: one configured as a site client (the
 * mirror first, then the primary) and one that knows only the primary.
 * With --setup, FILES empty files are made under PREFIX first (PREFIX/dNN/fNNN,
 * 100 per directory) through the primary, and the mirror is waited for
 * until it has them. Then, for each thread count, each handle answers CALLS
 * mp_stat calls of paths drawn uniformly at random among the files, split
 * among the threads, which share the handle (as an application's threads
 * would). A warm-up of WARMUP calls per run comes first, unmeasured.
 *
 * A call's latency is CLOCK_MONOTONIC around mp_stat. Every answer must be
 * the file asked for; the mirror handle's answers must come from the mirror
 * (served_by), or they count as fallbacks. Prints one JSON object. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mirrorplane/mirrorplane.h>

#include "samples.h"

#define MAX_THREADS     64
#define MAX_SETS        16
#define MAX_ERROR_KINDS 8
#define FILES_PER_DIR   100
#define PATH_MAX_LEN    256

struct opts {
	const char *primary, *mirror, *prefix;
	long files, calls, warmup;
	int threads[8];
	int nthreads;
	bool setup;
	const char *set[MAX_SETS]; /* NAME=VALUE for mp_config_set */
	int nset;
};

/* What one run collects, shared by its threads. */
struct run {
	mp_client *c;
	const struct opts *o;
	atomic_long left; /* calls not yet handed out */
	bool measure;
	pthread_mutex_t lock;
	struct samples lat;
	long errors, from_mirror, from_primary, fallbacks;
	char msgs[MAX_ERROR_KINDS][MP_ERROR_MAX];
	long msg_count[MAX_ERROR_KINDS];
	int nmsgs;
	atomic_uint seed;
};

static void file_path(const struct opts *o, long i, char *out, size_t cap)
{
	snprintf(out, cap, "%s/d%02ld/f%03ld", o->prefix, i / FILES_PER_DIR, i % FILES_PER_DIR);
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static void run_error(struct run *r, const char *msg)
{
	pthread_mutex_lock(&r->lock);
	r->errors++;
	int k;
	for (k = 0; k < r->nmsgs && strcmp(r->msgs[k], msg) != 0; k++)
		;
	if (k == r->nmsgs && r->nmsgs < MAX_ERROR_KINDS)
		snprintf(r->msgs[r->nmsgs++], MP_ERROR_MAX, "%s", msg);
	if (k < r->nmsgs)
		r->msg_count[k]++;
	pthread_mutex_unlock(&r->lock);
}

static void *run_thread(void *arg)
{
	struct run *r = arg;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (atomic_fetch_add(&r->seed, 1) + 1);
	struct samples lat = {0};
	long mirror = 0, primary = 0, fallbacks = 0;
	char path[PATH_MAX_LEN], want[32];
	while (atomic_fetch_sub(&r->left, 1) > 0) {
		long i = (long)(xorshift(&seed) % (uint64_t)r->o->files);
		file_path(r->o, i, path, sizeof(path));
		snprintf(want, sizeof(want), "f%03ld", i % FILES_PER_DIR);
		mp_call call = {0};
		mp_node n;
		mp_error err;
		int64_t t0 = bench_mono_ns();
		int rc = mp_stat(r->c, path, &call, &n, &err);
		int64_t t1 = bench_mono_ns();
		if (!r->measure) {
			if (rc == 0)
				mp_node_clear(&n);
			continue;
		}
		if (rc < 0) {
			run_error(r, err.message);
			continue;
		}
		if (n.type != MP_TYPE_FILE || strcmp(n.name, want) != 0) {
			char m[MP_ERROR_MAX];
			snprintf(m, sizeof(m), "%s: got a %s named '%s'", path,
			         mp_type_name(n.type), n.name);
			run_error(r, m);
			mp_node_clear(&n);
			continue;
		}
		mp_node_clear(&n);
		samples_add(&lat, t1 - t0);
		if (strncmp(call.served_by, "mirror", 6) == 0)
			mirror++;
		else
			primary++;
		fallbacks += call.fallbacks;
	}
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < lat.n; i++)
		samples_add(&r->lat, lat.v[i]);
	r->from_mirror += mirror;
	r->from_primary += primary;
	r->fallbacks += fallbacks;
	pthread_mutex_unlock(&r->lock);
	free(lat.v);
	return NULL;
}

/* Runs `calls` stats on `threads` threads; returns the wall time in ns. */
static int64_t run_calls(struct run *r, int threads, long calls)
{
	pthread_t th[MAX_THREADS];
	atomic_store(&r->left, calls);
	int64_t t0 = bench_mono_ns();
	for (int i = 0; i < threads; i++)
		if (pthread_create(&th[i], NULL, run_thread, r) != 0)
			bench_die("pthread_create failed");
	for (int i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	return bench_mono_ns() - t0;
}

static void print_run(const char *handle, int threads, struct run *r, int64_t wall_ns, bool first)
{
	printf("%s{\"handle\": \"%s\", \"threads\": %d, \"calls\": %zu, \"seconds\": %.6f, "
	       "\"calls_per_sec\": %.1f, ",
	       first ? "" : ", ", handle, threads, r->lat.n, (double)wall_ns / 1e9,
	       (double)r->lat.n / ((double)wall_ns / 1e9));
	samples_print_json(stdout, "latency_us", &r->lat);
	printf(", \"served_by_mirror\": %ld, \"served_by_primary\": %ld, \"fallbacks\": %ld, "
	       "\"errors\": %ld, \"error_messages\": [",
	       r->from_mirror, r->from_primary, r->fallbacks, r->errors);
	for (int k = 0; k < r->nmsgs; k++) {
		printf("%s{\"count\": %ld, \"message\": ", k ? ", " : "", r->msg_count[k]);
		bench_json_str(stdout, r->msgs[k]);
		printf("}");
	}
	printf("]}");
}

static mp_client *open_handle(const struct opts *o, bool with_mirror)
{
	mp_config *cfg;
	mp_client *c;
	mp_error err;
	if (mp_config_new(&cfg, &err) < 0 || mp_config_add(cfg, "primary", o->primary, &err) < 0 ||
	    mp_config_set(cfg, "session_file", "-", &err) < 0)
		bench_die("config: %s", err.message);
	if (with_mirror && mp_config_add(cfg, "mirror", o->mirror, &err) < 0)
		bench_die("config: %s", err.message);
	for (int i = 0; i < o->nset; i++) {
		char name[128];
		const char *eq = strchr(o->set[i], '=');
		if (eq == NULL || (size_t)(eq - o->set[i]) >= sizeof(name))
			bench_die("-o %s: want NAME=VALUE", o->set[i]);
		snprintf(name, sizeof(name), "%.*s", (int)(eq - o->set[i]), o->set[i]);
		if (mp_config_set(cfg, name, eq + 1, &err) < 0)
			bench_die("-o %s: %s", o->set[i], err.message);
	}
	if (mp_client_open(cfg, &c, &err) < 0)
		bench_die("mp_client_open: %s", err.message);
	mp_config_free(cfg);
	return c;
}

/* Makes the files through the primary, then waits until the mirror has
 * the last of them. */
static void setup_files(const struct opts *o, mp_client *writer, mp_client *site)
{
	mp_error err;
	mp_call call = {0};
	char path[PATH_MAX_LEN];
	int64_t t0 = bench_mono_ns();
	for (long d = 0; d * FILES_PER_DIR < o->files; d++) {
		snprintf(path, sizeof(path), "%s/d%02ld", o->prefix, d);
		if (mp_mkdir(writer, path, 0755, true, NULL, &err) < 0 && err.code != -EEXIST)
			bench_die("mkdir %s: %s", path, err.message);
	}
	for (long i = 0; i < o->files; i++) {
		file_path(o, i, path, sizeof(path));
		if (mp_put_buffer(writer, NULL, 0, path, NULL, &call, &err) < 0)
			bench_die("create %s: %s", path, err.message);
	}
	uint64_t want = call.version;
	for (;;) {
		mp_versions v;
		if (mp_version(site, &v, &err) == 0 && v.mirror >= want)
			break;
		if (bench_mono_ns() - t0 > 60 * 1000000000ll)
			bench_die("the mirror did not reach version %" PRIu64 " within 60 s", want);
		nanosleep(&(struct timespec){0, 10000000}, NULL);
	}
	fprintf(stderr, "client_stat: %ld files under %s at version %" PRIu64 " in %.2f s\n",
	        o->files, o->prefix, want, (double)(bench_mono_ns() - t0) / 1e9);
}

static void usage(void)
{
	fprintf(stderr, "usage: client_stat --primary HOST:PORT --mirror HOST:PORT [--setup]\n"
	                "                   [--prefix /stat] [--files 1000] [--calls 20000]\n"
	                "                   [--warmup 2000] [--threads 1,8] [-o NAME=VALUE]...\n");
	exit(2);
}

static void parse_threads(struct opts *o, const char *s)
{
	o->nthreads = 0;
	char *copy = strdup(s), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int n = atoi(t);
		if (n < 1 || n > MAX_THREADS || o->nthreads == 8)
			bench_die("--threads: 1..%d, at most 8 counts", MAX_THREADS);
		o->threads[o->nthreads++] = n;
	}
	free(copy);
	if (o->nthreads == 0)
		usage();
}

int main(int argc, char **argv)
{
	struct opts o = {.prefix = "/stat", .files = 1000, .calls = 20000, .warmup = 2000};
	o.threads[0] = 1;
	o.threads[1] = 8;
	o.nthreads = 2;
	static const struct option lopts[] = {
	    {"primary", required_argument, NULL, 'p'}, {"mirror", required_argument, NULL, 'm'},
	    {"prefix", required_argument, NULL, 'P'},  {"files", required_argument, NULL, 'f'},
	    {"calls", required_argument, NULL, 'n'},   {"warmup", required_argument, NULL, 'w'},
	    {"threads", required_argument, NULL, 't'}, {"setup", no_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},          {0, 0, 0, 0},
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
		case 'P':
			o.prefix = optarg;
			break;
		case 'f':
			o.files = atol(optarg);
			break;
		case 'n':
			o.calls = atol(optarg);
			break;
		case 'w':
			o.warmup = atol(optarg);
			break;
		case 't':
			parse_threads(&o, optarg);
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
	if (o.primary == NULL || o.mirror == NULL || optind != argc)
		usage();
	if (o.files < 1 || o.files > 100 * FILES_PER_DIR || o.calls < 1 || o.warmup < 0)
		bench_die("--files 1..%d, --calls >= 1, --warmup >= 0", 100 * FILES_PER_DIR);

	mp_client *site = open_handle(&o, true), *prim = open_handle(&o, false);
	if (o.setup)
		setup_files(&o, prim, site);

	printf("{\"files\": %ld, \"calls\": %ld, \"warmup\": %ld, \"runs\": [", o.files, o.calls,
	       o.warmup);
	bool first = true;
	for (int t = 0; t < o.nthreads; t++) {
		for (int h = 0; h < 2; h++) {
			struct run r = {.c = h == 0 ? site : prim, .o = &o};
			pthread_mutex_init(&r.lock, NULL);
			r.measure = false;
			if (o.warmup > 0)
				run_calls(&r, o.threads[t], o.warmup);
			r.measure = true;
			int64_t wall = run_calls(&r, o.threads[t], o.calls);
			print_run(h == 0 ? "mirror" : "primary", o.threads[t], &r, wall, first);
			first = false;
			fflush(stdout);
			free(r.lat.v);
			pthread_mutex_destroy(&r.lock);
		}
	}
	printf("]}\n");
	mp_client_close(site);
	mp_client_close(prim);
	return 0;
}
