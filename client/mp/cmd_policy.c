/* policy: replication and warmup policies. "check" is offline: it reads the
 * file and validates it here, talking to no server. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "policy.h"

/* Splits a comma-separated option value in place into a NULL-free array
 * (malloc'd; the strings point into s). */
static int split_list(char *s, const char ***ret, size_t *ret_n)
{
	const char **v = NULL;
	size_t n = 0;

	for (char *save = NULL, *tok = strtok_r(s, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		const char **grown = realloc(v, (n + 1) * sizeof(*v));
		if (!grown) {
			free(v);
			return -ENOMEM;
		}
		v = grown;
		v[n++] = tok;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static int policy_check(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"sites", required_argument, NULL, 's'},
	    {"buckets", required_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct policy_known known = {0};
	struct policy_errors errs = {0};
	const char **sites = NULL, **buckets = NULL;
	struct policy *p = NULL;
	int opt, r, status;

	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "h", opts)) != -1) {
		if (opt == 'h')
			return commands_print_help(ctx->cmd);
		if (opt == CTX_OPT_ERROR)
			return EXIT_USAGE;
		if (split_list(optarg, opt == 's' ? &sites : &buckets,
		               opt == 's' ? &known.n_sites : &known.n_buckets) < 0) {
			free(sites);
			free(buckets);
			return ctx_failf(ctx, NULL, "out of memory");
		}
		if (opt == 's')
			known.sites = sites;
		else
			known.buckets = buckets;
	}
	if (argc - optind != 1) {
		free(sites);
		free(buckets);
		return ctx_usage(ctx, "give one FILE");
	}
	r = policy_parse_file(argv[optind], &known, &p, &errs);
	if (r == 0) {
		if (ctx->json)
			printf("{\"ok\": true, \"replication\": %zu, \"warmup\": %zu}\n",
			       p->n_replication, p->n_warmup);
		else if (!ctx->quiet)
			printf("policy OK: %zu replication rule%s, %zu warmup pipeline%s\n",
			       p->n_replication, p->n_replication == 1 ? "" : "s", p->n_warmup,
			       p->n_warmup == 1 ? "" : "s");
		status = EXIT_OK;
	} else if (errs.n > 0) {
		policy_errors_print(&errs, stderr);
		status = EXIT_FAIL;
	} else {
		status = ctx_failf(ctx, argv[optind], "%s", ctx_strerror(-r));
	}
	policy_free(p);
	policy_errors_clear(&errs);
	free(sites);
	free(buckets);
	return status;
}

int cmd_policy(struct ctx *ctx, int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		if (argc < 2)
			return ctx_usage(ctx, "give a subcommand: check");
		return commands_print_help(ctx->cmd);
	}
	if (strcmp(argv[1], "check") == 0)
		return policy_check(ctx, argc - 1, argv + 1);
	return ctx_usage(ctx, "unknown subcommand '%s' (expected check)", argv[1]);
}
