/* import_bench: one mp_import through libmirrorplane, timed.
 *
 *     import_bench -c SITE.yaml [--again] SOURCE DEST
 *
 * Imports SOURCE (ALIAS[/PREFIX], with the alias configured under buckets:
 * in the site configuration, as for mp) into DEST. Without --again DEST must not exist and every
 * listed object must become a file; with --again DEST holds an import of
 * the same objects, which must all be found unchanged, and nothing may be
 * written (the primary's version must not move). Prints one JSON object:
 * the objects, seconds, objects per second and this process's CPU seconds. */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <mirrorplane/mirrorplane.h>

#include "samples.h"

struct opts {
	const char *config, *source, *dest;
	bool again;
};

static void usage(void)
{
	fprintf(stderr, "usage: import_bench -c SITE.yaml [--again] SOURCE DEST\n");
	exit(2);
}

static void parse(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
	    {"again", no_argument, NULL, 'a'},
	    {NULL, 0, NULL, 0},
	};
	int ch;
	*o = (struct opts){0};
	while ((ch = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o->config = optarg;
			break;
		case 'a':
			o->again = true;
			break;
		default:
			usage();
		}
	}
	if (o->config == NULL || argc - optind != 2)
		usage();
	o->source = argv[optind];
	o->dest = argv[optind + 1];
}

static mp_client *open_client(const struct opts *o)
{
	mp_config *cfg;
	mp_client *c;
	mp_error err;
	if (mp_config_new(&cfg, &err) < 0 || mp_config_load(cfg, o->config, &err) < 0 ||
	    mp_config_set(cfg, "session_file", "-", &err) < 0 || mp_client_open(cfg, &c, &err) < 0)
		bench_die("%s: %s", o->config, err.message);
	mp_config_free(cfg);
	return c;
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The namespace version, read at the current version (strong). */
static uint64_t primary_version(mp_client *c)
{
	mp_call call = {.consistency = MP_STRONG};
	mp_node n;
	mp_error err;
	if (mp_stat(c, "/", &call, &n, &err) < 0)
		bench_die("stat /: %s", err.message);
	mp_node_clear(&n);
	return call.version;
}

int main(int argc, char **argv)
{
	struct opts o;
	parse(argc, argv, &o);
	mp_client *c = open_client(&o);
	mp_node n;
	mp_error err;
	int exists = mp_stat(c, o.dest, NULL, &n, &err) == 0;
	if (exists)
		mp_node_clear(&n);
	if (exists != o.again)
		bench_die("%s %s", o.dest, o.again ? "does not exist: import it first" : "exists");
	uint64_t v0 = primary_version(c);
	mp_transfer_opts topts = {0};
	mp_import_stats st;
	double cpu0 = cpu_seconds();
	int64_t t0 = bench_mono_ns();
	if (mp_import(c, o.source, o.dest, &topts, &st, NULL, &err) < 0)
		bench_die("import %s %s: %s", o.source, o.dest, err.message);
	double seconds = (double)(bench_mono_ns() - t0) / 1e9, cpu = cpu_seconds() - cpu0;
	uint64_t v1 = primary_version(c);
	if (st.listed == 0 ||
	    (!o.again && (st.created != st.listed - st.skipped || st.updated + st.removed != 0)) ||
	    (o.again && (st.unchanged != st.listed - st.skipped ||
	                 st.created + st.updated + st.removed != 0 || v1 != v0)))
		bench_die("import%s: listed %" PRIu64 ", created %" PRIu64 ", updated %" PRIu64
		          ", unchanged %" PRIu64 ", removed %" PRIu64 ", skipped %" PRIu64
		          "; the primary went from version %" PRIu64 " to %" PRIu64,
		          o.again ? " again" : "", st.listed, st.created, st.updated, st.unchanged,
		          st.removed, st.skipped, v0, v1);
	printf("{\"source\": ");
	bench_json_str(stdout, o.source);
	printf(", \"again\": %s, \"objects\": %" PRIu64 ", \"bytes\": %" PRIu64
	       ", \"seconds\": %.3f, \"per_s\": %.0f, \"cpu_s\": %.3f, \"writes\": %" PRIu64 "}\n",
	       o.again ? "true" : "false", st.listed, st.bytes, seconds,
	       (double)st.listed / seconds, cpu, v1 - v0);
	mp_client_close(c);
	return 0;
}
