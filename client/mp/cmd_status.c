/* status and version: what the servers say about themselves. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "mpconfig.h"
#include "output.h"

static const struct option help_opts[] = {
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Parses a command that takes no operands: -1 to go on, else the exit
 * status. */
static int status_parse(struct ctx *ctx, int argc, char **argv)
{
	int opt;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "h", help_opts)) != -1) {
		if (opt == 'h')
			return commands_print_help(ctx->cmd);
		return EXIT_USAGE;
	}
	if (optind < argc)
		return ctx_usage(ctx, "unexpected operand '%s'", argv[optind]);
	return -1;
}

/* ---- status ---- */

enum {
	COL_ADDRESS,
	COL_ROLE,
	COL_SITE,
	COL_STATE,
	COL_VERSION,
	COL_LAG,
	COL_STALENESS,
	COL_RTT,
	N_COLS
};

static const char *const status_headers[N_COLS] = {
    "ADDRESS", "ROLE", "SITE", "STATE", "VERSION", "LAG", "STALENESS", "RTT",
};

static const char *status_state(const mp_server_status *s)
{
	if (!s->up)
		return "down";
	return s->marked_down ? "avoided" : "up";
}

/* The text of one cell. */
static void status_cell(const mp_server_status *s, int col, char *out, size_t len)
{
	bool mirror = strcmp(s->role, "mirror") == 0;
	switch (col) {
	case COL_ADDRESS:
		snprintf(out, len, "%s", s->address);
		break;
	case COL_ROLE:
		snprintf(out, len, "%s", s->role);
		break;
	case COL_SITE:
		snprintf(out, len, "%s", s->site[0] != '\0' ? s->site : "-");
		break;
	case COL_STATE:
		snprintf(out, len, "%s", status_state(s));
		break;
	case COL_VERSION:
		if (s->up)
			snprintf(out, len, "%" PRIu64, s->version);
		else
			snprintf(out, len, "-");
		break;
	case COL_LAG:
		if (s->up && mirror)
			snprintf(out, len, "%" PRIu64, s->lag_versions);
		else
			snprintf(out, len, "-");
		break;
	case COL_STALENESS:
		if (s->up && mirror && s->staleness_ms >= 0)
			output_duration_ms((uint64_t)s->staleness_ms, out, len);
		else
			snprintf(out, len, "-");
		break;
	case COL_RTT:
		if (s->up)
			snprintf(out, len, "%.1fms", s->rtt_ms);
		else
			snprintf(out, len, "-");
		break;
	}
}

static void status_print_json(const mp_server_status *st, size_t n, bool primary_up,
                              const mp_cache_node *nodes, size_t nn, const mp_site_info *sites,
                              size_t ns)
{
	struct jsonw w;
	jsonw_init(&w, stdout);
	jsonw_object_begin(&w);
	jsonw_field_bool(&w, "primary_up", primary_up);
	jsonw_key(&w, "servers");
	jsonw_array_begin(&w);
	for (size_t i = 0; i < n; i++) {
		const mp_server_status *s = &st[i];
		jsonw_object_begin(&w);
		jsonw_field_string(&w, "address", s->address);
		jsonw_field_string(&w, "role", s->role);
		jsonw_field_string(&w, "site", s->site);
		jsonw_field_string(&w, "state", status_state(s));
		jsonw_field_bool(&w, "up", s->up);
		jsonw_field_bool(&w, "marked_down", s->marked_down);
		if (s->up) {
			jsonw_field_uint(&w, "version", s->version);
			jsonw_field_uint(&w, "lag_versions", s->lag_versions);
			jsonw_key(&w, "staleness_ms");
			if (s->staleness_ms >= 0)
				jsonw_int(&w, s->staleness_ms);
			else
				jsonw_null(&w);
			jsonw_key(&w, "rtt_ms");
			jsonw_double(&w, s->rtt_ms);
		} else {
			jsonw_field_string(&w, "error", s->error);
		}
		jsonw_object_end(&w);
	}
	jsonw_array_end(&w);
	jsonw_key(&w, "cache_group");
	jsonw_array_begin(&w);
	for (size_t i = 0; i < nn; i++) {
		const mp_cache_node *c = &nodes[i];
		jsonw_object_begin(&w);
		jsonw_field_string(&w, "address", c->address);
		jsonw_field_string(&w, "state", c->state);
		jsonw_field_uint(&w, "weight", c->weight);
		jsonw_field_uint(&w, "used", c->used);
		jsonw_field_uint(&w, "capacity", c->capacity);
		jsonw_field_uint(&w, "hits", c->hits);
		jsonw_field_uint(&w, "misses", c->misses);
		jsonw_key(&w, "hit_ratio");
		jsonw_double(
		    &w, c->hits + c->misses ? (double)c->hits / (double)(c->hits + c->misses) : 0);
		jsonw_object_end(&w);
	}
	jsonw_array_end(&w);
	jsonw_key(&w, "sites");
	jsonw_array_begin(&w);
	for (size_t i = 0; i < ns; i++) {
		const mp_site_info *x = &sites[i];
		jsonw_object_begin(&w);
		jsonw_field_string(&w, "site", x->site);
		jsonw_field_string(&w, "upstream", x->upstream);
		jsonw_field_string(&w, "state", x->state);
		jsonw_field_uint(&w, "version", x->version);
		jsonw_field_uint(&w, "lag_versions", x->lag_versions);
		jsonw_field_uint(&w, "lag_ms", x->lag_ms);
		jsonw_field_uint(&w, "repl_pending_objects", x->repl_pending_objects);
		jsonw_field_uint(&w, "repl_pending_bytes", x->repl_pending_bytes);
		jsonw_field_uint(&w, "repl_failing_objects", x->repl_failing_objects);
		jsonw_field_uint(&w, "cache_nodes", x->cache_nodes);
		jsonw_field_uint(&w, "cache_used", x->cache_used);
		jsonw_field_uint(&w, "cache_capacity", x->cache_capacity);
		jsonw_object_end(&w);
	}
	jsonw_array_end(&w);
	jsonw_object_end(&w);
	jsonw_finish(&w);
}

/* The tree of sites, as their reports reach the primary. */
static void sites_print_table(const mp_site_info *s, size_t n, const char *from)
{
	printf("\nSITES (as %s knows them)\n", from);
	printf("%-16s %-22s %-12s %10s %8s %10s %14s %6s %s\n", "SITE", "UPSTREAM", "STATE",
	       "VERSION", "LAG", "REPL-PEND", "REPL-BYTES", "NODES", "CACHE USED / CAP");
	for (size_t i = 0; i < n; i++) {
		char lag[32], bytes[32], used[32], cap[32];
		output_duration_ms(s[i].lag_ms, lag, sizeof(lag));
		output_size(s[i].repl_pending_bytes, bytes, sizeof(bytes));
		output_size(s[i].cache_used, used, sizeof(used));
		output_size(s[i].cache_capacity, cap, sizeof(cap));
		printf("%-16s %-22s %-12s %10" PRIu64 " %8s %10" PRIu64 " %14s %6" PRIu64
		       " %s / %s\n",
		       s[i].site, s[i].upstream[0] ? s[i].upstream : "primary", s[i].state,
		       s[i].version, lag, s[i].repl_pending_objects, bytes, s[i].cache_nodes, used,
		       cap);
	}
}

/* The site's cache group under the servers' table. */
static void cache_print_table(const mp_cache_node *nodes, size_t n)
{
	printf("\nCACHE NODE%*s  STATE     WEIGHT  USED / CAPACITY          HIT RATIO\n", 12, "");
	for (size_t i = 0; i < n; i++) {
		const mp_cache_node *c = &nodes[i];
		char used[32], cap[32];
		output_size(c->used, used, sizeof(used));
		output_size(c->capacity, cap, sizeof(cap));
		uint64_t total = c->hits + c->misses;
		printf("%-22s  %-8s  %6" PRIu64 "  %10s / %-10s  %6.1f%% (%" PRIu64 " reads)\n",
		       c->address, c->state, c->weight, used, cap,
		       total ? 100.0 * (double)c->hits / (double)total : 0.0, total);
	}
}

static void status_print_table(const mp_server_status *st, size_t n)
{
	int width[N_COLS];
	char cell[128];
	for (int c = 0; c < N_COLS; c++)
		width[c] = (int)strlen(status_headers[c]);
	for (size_t i = 0; i < n; i++)
		for (int c = 0; c < N_COLS; c++) {
			status_cell(&st[i], c, cell, sizeof(cell));
			if ((int)strlen(cell) > width[c])
				width[c] = (int)strlen(cell);
		}
	for (int c = 0; c < N_COLS; c++)
		if (c + 1 < N_COLS)
			printf("%-*s  ", width[c], status_headers[c]);
		else
			printf("%s\n", status_headers[c]);
	for (size_t i = 0; i < n; i++) {
		for (int c = 0; c < N_COLS; c++) {
			status_cell(&st[i], c, cell, sizeof(cell));
			/* Figures right-aligned, words left. */
			bool right =
			    c == COL_VERSION || c == COL_LAG || c == COL_STALENESS || c == COL_RTT;
			printf(right ? "%*s" : "%-*s", width[c], cell);
			if (c + 1 < N_COLS)
				fputs("  ", stdout);
		}
		if (!st[i].up && st[i].error[0] != '\0')
			printf("  %s", st[i].error);
		putchar('\n');
	}
}

int cmd_status_status(struct ctx *ctx, int argc, char **argv)
{
	int rc = status_parse(ctx, argc, argv);
	if (rc >= 0)
		return rc;
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	size_t cap = 16, n = 0;
	mp_server_status *st = NULL;
	mp_error err = {0};
	/* Twice at most: the second time with room for every server. */
	for (int attempt = 0; attempt < 2; attempt++) {
		free(st);
		st = calloc(cap, sizeof(*st));
		if (st == NULL)
			return ctx_failf(ctx, NULL, "out of memory");
		if (mp_status(ctx->client, st, cap, &n, &err) < 0) {
			free(st);
			return ctx_fail(ctx, NULL, &err);
		}
		if (n <= cap)
			break;
		cap = n;
	}
	if (n > cap)
		n = cap;
	bool primary_up = false;
	for (size_t i = 0; i < n; i++)
		if (st[i].up && strcmp(st[i].role, "primary") == 0)
			primary_up = true;
	mp_cache_node nodes[64];
	size_t nn = 0;
	mp_error cerr;
	if (mp_cache_status(ctx->client, nodes, 64, &nn, &cerr) < 0)
		nn = 0;
	if (nn > 64)
		nn = 64;
	mp_site_info sites[64];
	size_t ns = 0;
	char from[96] = "";
	mp_error serr;
	if (mp_sites(ctx->client, sites, 64, &ns, from, sizeof(from), &serr) < 0)
		ns = 0;
	if (ns > 64)
		ns = 64;
	if (ctx->json) {
		status_print_json(st, n, primary_up, nodes, nn, sites, ns);
	} else {
		status_print_table(st, n);
		if (nn > 0)
			cache_print_table(nodes, nn);
		if (ns > 0)
			sites_print_table(sites, ns, from);
	}
	free(st);
	if (!primary_up) {
		/* After the table, which says why. */
		fflush(stdout);
		return ctx_failf(ctx, NULL, "no primary is up");
	}
	return EXIT_OK;
}

/* ---- version ---- */

int cmd_status_version(struct ctx *ctx, int argc, char **argv)
{
	int rc = status_parse(ctx, argc, argv);
	if (rc >= 0)
		return rc;
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	mp_versions v;
	mp_error err = {0};
	memset(&v, 0, sizeof(v));
	if (mp_version(ctx->client, &v, &err) < 0)
		return ctx_fail(ctx, NULL, &err);
	bool mirror = v.mirror_address[0] != '\0';
	if (ctx->json) {
		struct jsonw w;
		jsonw_init(&w, stdout);
		jsonw_object_begin(&w);
		jsonw_field_string(&w, "client", MP_VERSION_STRING);
		jsonw_field_uint(&w, "primary", v.primary);
		jsonw_key(&w, "mirror");
		if (mirror)
			jsonw_uint(&w, v.mirror);
		else
			jsonw_null(&w);
		jsonw_field_string(&w, "mirror_address", mirror ? v.mirror_address : NULL);
		jsonw_field_string(&w, "cluster_id", v.cluster_id);
		jsonw_object_end(&w);
		jsonw_finish(&w);
		return EXIT_OK;
	}
	printf("client   mp %s\n", MP_VERSION_STRING);
	printf("primary  %" PRIu64 "\n", v.primary);
	if (mirror)
		printf("mirror   %" PRIu64 " at %s\n", v.mirror, v.mirror_address);
	else
		printf("mirror   none answered\n");
	printf("cluster  %s\n", v.cluster_id);
	return EXIT_OK;
}
