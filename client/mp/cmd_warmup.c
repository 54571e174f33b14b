/* warmup: fill the site's cache group ahead of reads. Runs happen at the
 * site's mirror (ad hoc paths, or a policy pipeline by name); --check and
 * wait ask the cache nodes what they hold. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "jsonw.h"
#include "output.h"
#include "units.h"

#define POLL_MS 250

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void bar(uint64_t done, uint64_t total, char *out, size_t width)
{
	size_t n = total ? (size_t)((double)done / (double)total * (double)width) : width;
	for (size_t i = 0; i < width; i++)
		out[i] = i < n ? '#' : '.';
	out[width] = '\0';
}

static double run_rate(const mp_warmup_run *r)
{
	int64_t end = r->finished_ns > 0 ? r->finished_ns : r->now_ns;
	if (r->started_ns <= 0 || end <= r->started_ns)
		return 0;
	return (double)r->bytes_done / ((double)(end - r->started_ns) / 1e9);
}

static void run_json(struct jsonw *w, const mp_warmup_run *r)
{
	jsonw_object_begin(w);
	jsonw_key(w, "run");
	jsonw_int(w, r->run);
	jsonw_key(w, "pipeline");
	jsonw_string(w, r->pipeline);
	jsonw_key(w, "trigger");
	jsonw_string(w, r->trigger);
	jsonw_key(w, "kind");
	jsonw_string(w, r->kind);
	jsonw_key(w, "state");
	jsonw_string(w, r->state);
	jsonw_key(w, "version");
	jsonw_uint(w, r->version);
	const struct {
		const char *k;
		uint64_t v;
	} f[] = {{"files", r->files},       {"files_done", r->files_done},
	         {"bytes", r->bytes},       {"bytes_done", r->bytes_done},
	         {"blocks", r->blocks},     {"blocks_done", r->blocks_done},
	         {"failures", r->failures}, {"evicted_blocks", r->evicted_blocks}};
	for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++) {
		jsonw_key(w, f[k].k);
		jsonw_uint(w, f[k].v);
	}
	double rate = run_rate(r);
	jsonw_key(w, "rate_bytes_per_s");
	jsonw_double(w, rate);
	jsonw_key(w, "eta_s");
	if (rate > 0 && strcmp(r->state, "running") == 0)
		jsonw_double(w, (double)(r->bytes - r->bytes_done) / rate);
	else
		jsonw_null(w);
	jsonw_key(w, "duration_ms");
	int64_t end = r->finished_ns > 0 ? r->finished_ns : r->now_ns;
	jsonw_int(w, r->started_ns > 0 ? (end - r->started_ns) / 1000000 : 0);
	jsonw_key(w, "error");
	jsonw_string(w, r->error);
	jsonw_object_end(w);
}

static void run_line(FILE *out, const mp_warmup_run *r)
{
	char b[21], done[16], total[16], rate[16], eta[32] = "-";
	bar(r->bytes_done, r->bytes, b, 20);
	output_size(r->bytes_done, done, sizeof(done));
	output_size(r->bytes, total, sizeof(total));
	double rt = run_rate(r);
	output_size((uint64_t)rt, rate, sizeof(rate));
	if (rt > 0 && strcmp(r->state, "running") == 0)
		output_duration_ms((uint64_t)((double)(r->bytes - r->bytes_done) / rt * 1000), eta,
		                   sizeof(eta));
	fprintf(out,
	        "%-6lld %-20s %-10s %-8s v%-6llu [%s] %9s/%-9s %4llu/%-4llu files %8s/s ETA %-6s "
	        "%llu failures",
	        (long long)r->run, r->pipeline, r->trigger, r->state,
	        (unsigned long long)r->version, b, done, total, (unsigned long long)r->files_done,
	        (unsigned long long)r->files, rate, eta, (unsigned long long)r->failures);
}

/* Follows a run until it ends; 0 when done. */
static int follow(struct ctx *ctx, int64_t id, mp_warmup_run *last)
{
	bool tty = ctx_progress_wanted(ctx);
	for (;;) {
		mp_warmup_run r;
		size_t n = 0;
		mp_error err;
		int rc = mp_warmup_status(ctx->client, id, NULL, &r, 1, &n, &err);
		if (rc < 0)
			return ctx_fail(ctx, NULL, &err);
		if (n == 0)
			return ctx_failf(ctx, NULL, "run %lld is no longer listed by the mirror",
			                 (long long)id);
		*last = r;
		bool over = strcmp(r.state, "done") == 0 || strcmp(r.state, "failed") == 0;
		if (tty) {
			fputc('\r', stderr);
			run_line(stderr, &r);
			fputs("\033[K", stderr);
			if (over)
				fputc('\n', stderr);
			fflush(stderr);
		}
		if (over)
			return strcmp(r.state, "done") == 0 ? 0 : -EIO;
		sleep_ms(POLL_MS);
	}
}

static int read_list(struct ctx *ctx, const char *file, char ***paths, size_t *n)
{
	FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
	if (f == NULL)
		return ctx_failf(ctx, file, "%s", strerror(errno));
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	unsigned lineno = 0;
	int rc = 0;
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
		                   line[len - 1] == ' ' || line[len - 1] == '\t'))
			line[--len] = '\0';
		char *p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0' || *p == '#')
			continue;
		if (*p != '/') {
			rc = ctx_failf(ctx, NULL, "%s:%u: '%s' is not an absolute path", file,
			               lineno, p);
			break;
		}
		char **grown = realloc(*paths, (*n + 1) * sizeof(**paths));
		if (grown == NULL || (grown[*n] = strdup(p)) == NULL) {
			if (grown != NULL)
				*paths = grown;
			rc = ctx_failf(ctx, NULL, "out of memory");
			break;
		}
		*paths = grown;
		(*n)++;
	}
	free(line);
	if (f != stdin)
		fclose(f);
	return rc;
}

static int check(struct ctx *ctx, char **paths, size_t n)
{
	int status = EXIT_OK;
	struct jsonw w;
	if (ctx->json) {
		jsonw_init(&w, stdout);
		jsonw_object_begin(&w);
		jsonw_key(&w, "paths");
		jsonw_array_begin(&w);
	}
	for (size_t i = 0; i < n; i++) {
		mp_warmup_cached c;
		mp_error err;
		if (mp_warmup_check(ctx->client, paths[i], &c, &err) < 0) {
			status = ctx_fail(ctx, paths[i], &err);
			continue;
		}
		if (ctx->json) {
			jsonw_object_begin(&w);
			jsonw_key(&w, "path");
			jsonw_string(&w, paths[i]);
			const struct {
				const char *k;
				uint64_t v;
			} f[] = {{"version", c.version},
			         {"files", c.files},
			         {"files_cached", c.files_cached},
			         {"blocks", c.blocks},
			         {"blocks_cached", c.blocks_cached},
			         {"bytes", c.bytes},
			         {"bytes_cached", c.bytes_cached}};
			for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++) {
				jsonw_key(&w, f[k].k);
				jsonw_uint(&w, f[k].v);
			}
			jsonw_key(&w, "complete");
			jsonw_bool(&w, c.blocks_cached == c.blocks);
			jsonw_object_end(&w);
		} else {
			char done[16], total[16];
			output_size(c.bytes_cached, done, sizeof(done));
			output_size(c.bytes, total, sizeof(total));
			printf("%s: %llu/%llu files, %s/%s (%llu/%llu blocks, %.1f%%) cached at "
			       "version "
			       "%llu\n",
			       paths[i], (unsigned long long)c.files_cached,
			       (unsigned long long)c.files, done, total,
			       (unsigned long long)c.blocks_cached, (unsigned long long)c.blocks,
			       c.blocks ? 100.0 * (double)c.blocks_cached / (double)c.blocks
			                : 100.0,
			       (unsigned long long)c.version);
		}
	}
	if (ctx->json) {
		jsonw_array_end(&w);
		jsonw_object_end(&w);
		jsonw_finish(&w);
	}
	return status;
}

static int report(struct ctx *ctx, const mp_warmup_run *r, int rc)
{
	if (ctx->json) {
		struct jsonw w;
		jsonw_init(&w, stdout);
		run_json(&w, r);
		jsonw_finish(&w);
	} else if (!ctx->quiet) {
		char total[16];
		output_size(r->bytes, total, sizeof(total));
		printf("run %lld (%s) at version %llu: %s, %llu/%llu files, %s\n",
		       (long long)r->run, r->pipeline, (unsigned long long)r->version, r->state,
		       (unsigned long long)r->files_done, (unsigned long long)r->files, total);
	}
	if (rc < 0 || strcmp(r->state, "failed") == 0)
		return ctx_failf(ctx, NULL, "run %lld failed: %s", (long long)r->run, r->error);
	return EXIT_OK;
}

static int adhoc(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"file", required_argument, NULL, 'f'}, {"evict", no_argument, NULL, 'e'},
	    {"check", no_argument, NULL, 'C'},      {"background", no_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
	};
	bool evict = false, checking = false, background = false;
	char **paths = NULL;
	size_t n = 0;
	int opt, rc = EXIT_OK;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "f:h", opts)) != -1) {
		if (opt == 'h')
			return commands_print_help(ctx->cmd);
		if (opt == CTX_OPT_ERROR)
			return EXIT_USAGE;
		if (opt == 'e')
			evict = true;
		else if (opt == 'C')
			checking = true;
		else if (opt == 'b')
			background = true;
		else if (opt == 'f' && (rc = read_list(ctx, optarg, &paths, &n)) != 0)
			goto out;
	}
	for (int i = optind; i < argc; i++) {
		char **grown = realloc(paths, (n + 1) * sizeof(*paths));
		if (grown == NULL || (grown[n] = strdup(argv[i])) == NULL) {
			if (grown != NULL)
				paths = grown;
			rc = ctx_failf(ctx, NULL, "out of memory");
			goto out;
		}
		paths = grown;
		n++;
	}
	if (n == 0) {
		rc = ctx_usage(ctx, "give at least one PATH (or -f FILE)");
		goto out;
	}
	if (evict && checking) {
		rc = ctx_usage(ctx, "--evict and --check do not go together");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (paths[i][0] != '/') {
			rc = ctx_usage(ctx, "'%s' is not an absolute path", paths[i]);
			goto out;
		}
	if ((rc = ctx_open(ctx)) != 0)
		goto out;
	if (checking) {
		rc = check(ctx, paths, n);
		goto out;
	}
	mp_warmup_run r;
	mp_error err;
	if (mp_warmup_start(ctx->client, (const char *const *)paths, n, evict, NULL, &r, &err) <
	    0) {
		rc = ctx_fail(ctx, NULL, &err);
		goto out;
	}
	if (background) {
		rc = report(ctx, &r, 0);
		goto out;
	}
	int f = follow(ctx, r.run, &r);
	rc = f > 0 ? f : report(ctx, &r, f);
out:
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	return rc;
}

static int run_cmd(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"background", no_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool background = false;
	int opt, rc;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "h", opts)) != -1) {
		if (opt == 'h')
			return commands_print_help(ctx->cmd);
		if (opt == CTX_OPT_ERROR)
			return EXIT_USAGE;
		background = true;
	}
	if (argc - optind != 1)
		return ctx_usage(ctx, "give one pipeline NAME");
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	mp_warmup_run r;
	mp_error err;
	if (mp_warmup_start(ctx->client, NULL, 0, false, argv[optind], &r, &err) < 0)
		return ctx_fail(ctx, argv[optind], &err);
	if (background)
		return report(ctx, &r, 0);
	int f = follow(ctx, r.run, &r);
	return f > 0 ? f : report(ctx, &r, f);
}

static int status_cmd(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int opt, rc;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "h", opts)) != -1) {
		if (opt == 'h')
			return commands_print_help(ctx->cmd);
		if (opt == CTX_OPT_ERROR)
			return EXIT_USAGE;
	}
	if (argc - optind > 1)
		return ctx_usage(ctx, "give at most one pipeline NAME");
	const char *name = argc - optind == 1 ? argv[optind] : NULL;
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	size_t cap = 128, n = 0;
	mp_warmup_run *runs = calloc(cap, sizeof(*runs));
	if (runs == NULL)
		return ctx_failf(ctx, NULL, "out of memory");
	mp_error err;
	if (mp_warmup_status(ctx->client, 0, name, runs, cap, &n, &err) < 0) {
		free(runs);
		return ctx_fail(ctx, name, &err);
	}
	if (n > cap)
		n = cap;
	if (ctx->json) {
		struct jsonw w;
		jsonw_init(&w, stdout);
		jsonw_object_begin(&w);
		jsonw_key(&w, "runs");
		jsonw_array_begin(&w);
		for (size_t i = 0; i < n; i++)
			run_json(&w, &runs[i]);
		jsonw_array_end(&w);
		jsonw_object_end(&w);
		jsonw_finish(&w);
	} else if (n == 0) {
		printf("no warmup run at this site%s%s\n", name ? " for " : "", name ? name : "");
	} else {
		printf("%-6s %-20s %-10s %-8s %-7s %-22s %19s %15s\n", "RUN", "PIPELINE", "TRIGGER",
		       "STATE", "VERSION", "PROGRESS", "BYTES", "FILES");
		for (size_t i = 0; i < n; i++) {
			run_line(stdout, &runs[i]);
			fputc('\n', stdout);
			if (runs[i].error[0] != '\0')
				printf("  error: %s\n", runs[i].error);
		}
	}
	free(runs);
	return EXIT_OK;
}

static int wait_cmd(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	uint64_t timeout_ms = 0;
	int opt, rc;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "t:h", opts)) != -1) {
		if (opt == 'h')
			return commands_print_help(ctx->cmd);
		if (opt == CTX_OPT_ERROR)
			return EXIT_USAGE;
		if (units_parse_duration(optarg, &timeout_ms) < 0)
			return ctx_usage(ctx, "--timeout '%s': not a duration (e.g. 90s, 10m)",
			                 optarg);
	}
	if (argc - optind < 1)
		return ctx_usage(ctx, "give at least one PATH");
	for (int i = optind; i < argc; i++)
		if (argv[i][0] != '/')
			return ctx_usage(ctx, "'%s' is not an absolute path", argv[i]);
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	int64_t deadline = timeout_ms ? mono_ms() + (int64_t)timeout_ms : 0;
	mp_warmup_cached c = {0};
	mp_error err = {0};
	const char *pending = argv[optind];
	for (;;) {
		bool all = true;
		for (int i = optind; i < argc && all; i++) {
			rc = mp_warmup_check(ctx->client, argv[i], &c, &err);
			/* Not there yet, or no group yet: wait for it. */
			if (rc < 0 && rc != -ENOENT && rc != -ENODATA)
				return ctx_fail(ctx, argv[i], &err);
			if (rc < 0 || c.blocks_cached < c.blocks) {
				all = false;
				pending = argv[i];
			}
		}
		if (all) {
			if (!ctx->quiet && !ctx->json)
				printf("warm: every block under %s%s is cached\n", argv[optind],
				       argc - optind > 1 ? " (and the other paths)" : "");
			return EXIT_OK;
		}
		if (deadline && mono_ms() >= deadline)
			break;
		sleep_ms(POLL_MS);
	}
	char t[32];
	output_duration_ms(timeout_ms, t, sizeof(t));
	if (rc < 0)
		return ctx_failf(ctx, pending, "not warm after %s: %s", t, err.message);
	return ctx_failf(ctx, pending,
	                 "not warm after %s: %llu of %llu blocks cached (%llu/%llu files; first "
	                 "missing: %s)",
	                 t, (unsigned long long)c.blocks_cached, (unsigned long long)c.blocks,
	                 (unsigned long long)c.files_cached, (unsigned long long)c.files,
	                 c.first_missing);
}

int cmd_warmup(struct ctx *ctx, int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "run") == 0)
		return run_cmd(ctx, argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "status") == 0)
		return status_cmd(ctx, argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "wait") == 0)
		return wait_cmd(ctx, argc - 1, argv + 1);
	return adhoc(ctx, argc, argv);
}
