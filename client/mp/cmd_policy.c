/* policy: replication and warmup policies. "check" is offline: it reads the
 * file and validates it here, talking to no server. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "jsonw.h"
#include "output.h"
#include "paths.h"
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

/* What the FILE commands share: --sites and --buckets (names a policy may
 * use; others are errors) and one FILE operand. */
struct file_args {
	const char *file;
	const char **sites, **buckets;
	struct policy_known known;
};

#define HELP_SHOWN (-1)

static void file_args_free(struct file_args *fa)
{
	free(fa->sites);
	free(fa->buckets);
}

/* 0 with fa filled, HELP_SHOWN, or an exit status after saying why. */
static int file_args_parse(struct ctx *ctx, int argc, char **argv, struct file_args *fa)
{
	static const struct option opts[] = {
	    {"sites", required_argument, NULL, 's'},
	    {"buckets", required_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int opt;
	memset(fa, 0, sizeof(*fa));
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "h", opts)) != -1) {
		if (opt == 'h') {
			file_args_free(fa);
			commands_print_help(ctx->cmd);
			return HELP_SHOWN;
		}
		if (opt == CTX_OPT_ERROR) {
			file_args_free(fa);
			return EXIT_USAGE;
		}
		const char ***list = opt == 's' ? &fa->sites : &fa->buckets;
		free(*list);
		*list = NULL;
		if (split_list(optarg, list,
		               opt == 's' ? &fa->known.n_sites : &fa->known.n_buckets) < 0) {
			file_args_free(fa);
			return ctx_failf(ctx, NULL, "out of memory");
		}
		fa->known.sites = fa->sites;
		fa->known.buckets = fa->buckets;
	}
	if (argc - optind != 1) {
		file_args_free(fa);
		return ctx_usage(ctx, "give one FILE");
	}
	fa->file = argv[optind];
	return 0;
}

static int policy_check(struct ctx *ctx, int argc, char **argv)
{
	struct file_args fa;
	struct policy_errors errs = {0};
	struct policy *p = NULL;
	int r, status;
	if ((r = file_args_parse(ctx, argc, argv, &fa)) != 0)
		return r == HELP_SHOWN ? EXIT_OK : r;
	r = policy_parse_file(fa.file, &fa.known, &p, &errs);
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
		status = ctx_failf(ctx, fa.file, "%s", ctx_strerror(-r));
	}
	policy_free(p);
	policy_errors_clear(&errs);
	file_args_free(&fa);
	return status;
}

/* Reads and checks a policy file here first, so that errors come with the
 * file's own name and every position, before any server is asked. */
static int load_checked(struct ctx *ctx, const char *file, const struct policy_known *known,
                        char **ret_doc, size_t *ret_len, struct policy **ret_policy)
{
	char *doc;
	size_t len;
	char *why = NULL;
	int r = paths_read_file(file, POLICY_MAX_FILE_BYTES, &doc, &len, NULL, &why);
	if (r < 0) {
		int status = why != NULL ? ctx_failf(ctx, NULL, "%s", why)
		                         : ctx_failf(ctx, file, "%s", ctx_strerror(-r));
		free(why);
		return status;
	}
	struct policy_errors errs = {0};
	struct policy *p = NULL;
	r = policy_parse_buffer(file, doc, len, known, &p, &errs);
	if (r < 0) {
		int status = errs.n > 0 ? EXIT_FAIL : ctx_failf(ctx, file, "%s", ctx_strerror(-r));
		policy_errors_print(&errs, stderr);
		policy_errors_clear(&errs);
		free(doc);
		return status;
	}
	*ret_doc = doc;
	*ret_len = len;
	if (ret_policy != NULL)
		*ret_policy = p;
	else
		policy_free(p);
	return EXIT_OK;
}

static int policy_apply(struct ctx *ctx, int argc, char **argv)
{
	struct file_args fa;
	int rc = file_args_parse(ctx, argc, argv, &fa);
	if (rc != 0)
		return rc == HELP_SHOWN ? EXIT_OK : rc;
	char *doc;
	size_t len;
	const char *file = fa.file;
	rc = load_checked(ctx, file, &fa.known, &doc, &len, NULL);
	file_args_free(&fa);
	if (rc != EXIT_OK)
		return rc;
	if ((rc = ctx_open(ctx)) != 0) {
		free(doc);
		return rc;
	}
	mp_error err = {0};
	mp_call call = {0};
	if (mp_policy_apply(ctx->client, file, doc, len, &call, &err) < 0) {
		free(doc);
		return ctx_fail(ctx, file, &err);
	}
	free(doc);
	if (ctx->json)
		printf("{\"applied\": true, \"version\": %llu}\n",
		       (unsigned long long)call.version);
	else if (!ctx->quiet)
		printf("policy applied at version %llu\n", (unsigned long long)call.version);
	return EXIT_OK;
}

/* The policy in force, as the answering server holds it; *ret NULL when
 * none was applied. Returns an exit status. */
static int fetch_current(struct ctx *ctx, mp_call *call, char **ret_doc, size_t *ret_len,
                         int64_t *ret_ctime, struct policy **ret)
{
	mp_error err = {0};
	*ret = NULL;
	if (mp_policy_get(ctx->client, call, ret_doc, ret_len, ret_ctime, &err) < 0)
		return ctx_fail(ctx, NULL, &err);
	if (*ret_doc == NULL)
		return EXIT_OK;
	struct policy_errors errs = {0};
	int r = policy_parse_buffer("(policy in force)", *ret_doc, *ret_len, NULL, ret, &errs);
	if (r < 0) {
		/* Checked at apply; a newer mp may know keys this one does not. */
		policy_errors_print(&errs, stderr);
		policy_errors_clear(&errs);
		return ctx_failf(ctx, NULL, "the policy in force does not parse here");
	}
	return EXIT_OK;
}

static int policy_show(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	int opt, rc;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "h", opts)) != -1) {
		if (opt == 'h')
			return commands_print_help(ctx->cmd);
		return EXIT_USAGE;
	}
	if (optind != argc)
		return ctx_usage(ctx, "show takes no operand");
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	mp_call call = {0};
	char *doc = NULL;
	size_t len = 0;
	int64_t ctime = 0;
	struct policy *p = NULL;
	rc = fetch_current(ctx, &call, &doc, &len, &ctime, &p);
	if (rc != EXIT_OK) {
		free(doc);
		return rc;
	}
	if (ctx->json) {
		/* served_by is "ROLE HOST:PORT"; keep it JSON-safe all the same. */
		for (char *q = call.served_by; *q != '\0'; q++)
			if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
				*q = '?';
		printf("{\"version\": %llu, \"served_by\": \"%s\", \"applied_ns\": %lld, "
		       "\"policy\": ",
		       (unsigned long long)call.version, call.served_by, (long long)ctime);
		if (p != NULL)
			policy_to_json(p, stdout);
		else
			fputs("null", stdout);
		fputs("}\n", stdout);
	} else if (doc == NULL) {
		printf("no policy has been applied (version %llu, %s)\n",
		       (unsigned long long)call.version, call.served_by);
	} else {
		fwrite(doc, 1, len, stdout);
		if (len > 0 && doc[len - 1] != '\n')
			putchar('\n');
	}
	policy_free(p);
	free(doc);
	return EXIT_OK;
}

/* ---- plan ---- */

/* A rule or pipeline as JSON text, to tell whether two with one name
 * differ. malloc'd. */
static char *item_json(const struct policy_replication *r, const struct policy_warmup *w)
{
	struct policy one = {.replication = (struct policy_replication *)r,
	                     .n_replication = r != NULL,
	                     .warmup = (struct policy_warmup *)w,
	                     .n_warmup = w != NULL};
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (f == NULL)
		return NULL;
	policy_to_json(&one, f);
	fclose(f);
	return buf;
}

static const struct policy_replication *find_rule(const struct policy *p, const char *name)
{
	for (size_t i = 0; p != NULL && i < p->n_replication; i++)
		if (strcmp(p->replication[i].item.name, name) == 0)
			return &p->replication[i];
	return NULL;
}

static const struct policy_warmup *find_pipeline(const struct policy *p, const char *name)
{
	for (size_t i = 0; p != NULL && i < p->n_warmup; i++)
		if (strcmp(p->warmup[i].item.name, name) == 0)
			return &p->warmup[i];
	return NULL;
}

struct plan_site {
	const char *name; /* "*": every site no rule names */
	uint64_t copy_files, copy_bytes, drop_files, drop_bytes;
};

struct plan {
	struct ctx *ctx;
	const struct policy *old, *new;
	struct plan_site sites[POLICY_MAX_SITES * 2 + 1];
	size_t n_sites;
	uint64_t files;
};

static void add_site(struct plan *pl, const char *name)
{
	for (size_t i = 0; i < pl->n_sites; i++)
		if (strcmp(pl->sites[i].name, name) == 0)
			return;
	if (pl->n_sites < sizeof(pl->sites) / sizeof(pl->sites[0]))
		pl->sites[pl->n_sites++].name = name;
}

static void add_sites_of(struct plan *pl, const struct policy *p)
{
	for (size_t i = 0; p != NULL && i < p->n_replication; i++)
		for (size_t k = 0; k < p->replication[i].sites.n; k++)
			add_site(pl, p->replication[i].sites.items[k]);
}

/* Where a file's replica goes at site under p: the rule's bucket, or NULL. */
static const char *replica_bucket(const struct policy *p, const char *path, const char *site)
{
	if (p == NULL)
		return NULL;
	const struct policy_replication *r = policy_match(p, path, site);
	if (r == NULL || r->data != POLICY_DATA_REPLICATE)
		return NULL;
	return r->bucket != NULL ? r->bucket : "";
}

struct walk_dir {
	struct plan *pl;
	const char *dir;
	char **subdirs;
	size_t n, cap;
};

static int plan_entry(void *arg, const mp_node *e)
{
	struct walk_dir *wd = arg;
	char *path = ctx_path_join(wd->dir, e->name);
	if (path == NULL)
		return -ENOMEM;
	if (e->type == MP_TYPE_DIR) {
		if (wd->n == wd->cap) {
			size_t cap = wd->cap ? wd->cap * 2 : 16;
			char **grown = realloc(wd->subdirs, cap * sizeof(*grown));
			if (grown == NULL) {
				free(path);
				return -ENOMEM;
			}
			wd->subdirs = grown;
			wd->cap = cap;
		}
		wd->subdirs[wd->n++] = path;
		return 0;
	}
	if (e->type == MP_TYPE_FILE) {
		struct plan *pl = wd->pl;
		pl->files++;
		for (size_t i = 0; i < pl->n_sites; i++) {
			struct plan_site *s = &pl->sites[i];
			const char *was = replica_bucket(pl->old, path, s->name);
			const char *will = replica_bucket(pl->new, path, s->name);
			bool same = was != NULL && will != NULL && strcmp(was, will) == 0;
			if (will != NULL && !same) {
				s->copy_files++;
				s->copy_bytes += e->size;
			}
			if (was != NULL && !same) {
				s->drop_files++;
				s->drop_bytes += e->size;
			}
		}
	}
	free(path);
	return 0;
}

static int plan_walk(struct plan *pl, const char *dir, mp_error *err)
{
	struct walk_dir wd = {.pl = pl, .dir = dir};
	mp_call call = {0};
	int r = mp_list(pl->ctx->client, dir, &call, plan_entry, &wd, err);
	for (size_t i = 0; i < wd.n; i++) {
		if (r == 0)
			r = plan_walk(pl, wd.subdirs[i], err);
		free(wd.subdirs[i]);
	}
	free(wd.subdirs);
	return r;
}

static void plan_items(struct ctx *ctx, struct jsonw *w, const char *what, const struct policy *old,
                       const struct policy *new, bool rules)
{
	size_t nn = rules ? (new ? new->n_replication : 0) : (new ? new->n_warmup : 0);
	size_t no = rules ? (old ? old->n_replication : 0) : (old ? old->n_warmup : 0);
	for (int pass = 0; pass < 2; pass++) {
		size_t n = pass == 0 ? nn : no;
		for (size_t i = 0; i < n; i++) {
			const struct policy *p = pass == 0 ? new : old;
			const struct policy *other = pass == 0 ? old : new;
			const char *name =
			    rules ? p->replication[i].item.name : p->warmup[i].item.name;
			const struct policy_replication *ro = rules ? find_rule(other, name) : NULL;
			const struct policy_warmup *wo = rules ? NULL : find_pipeline(other, name);
			const char *change;
			if (ro == NULL && wo == NULL) {
				change = pass == 0 ? "add" : "remove";
			} else if (pass == 1) {
				continue; /* in both: reported on the first pass */
			} else {
				char *a = rules ? item_json(&p->replication[i], NULL)
				                : item_json(NULL, &p->warmup[i]);
				char *b = rules ? item_json(ro, NULL) : item_json(NULL, wo);
				change =
				    a != NULL && b != NULL && strcmp(a, b) == 0 ? "same" : "change";
				free(a);
				free(b);
			}
			if (ctx->json) {
				jsonw_object_begin(w);
				jsonw_key(w, "kind");
				jsonw_string(w, what);
				jsonw_key(w, "name");
				jsonw_string(w, name);
				jsonw_key(w, "change");
				jsonw_string(w, change);
				jsonw_object_end(w);
			} else if (strcmp(change, "same") != 0) {
				printf("  %c %s %s\n",
				       change[0] == 'a'   ? '+'
				       : change[0] == 'r' ? '-'
				                          : '~',
				       what, name);
			}
		}
	}
}

static int policy_plan(struct ctx *ctx, int argc, char **argv)
{
	struct file_args fa;
	int rc = file_args_parse(ctx, argc, argv, &fa);
	if (rc != 0)
		return rc == HELP_SHOWN ? EXIT_OK : rc;
	char *doc, *cur_doc = NULL;
	size_t len, cur_len = 0;
	struct policy *new = NULL, *old = NULL;
	const char *file = fa.file;
	rc = load_checked(ctx, file, &fa.known, &doc, &len, &new);
	file_args_free(&fa);
	if (rc != EXIT_OK)
		return rc;
	free(doc);
	if ((rc = ctx_open(ctx)) != 0) {
		policy_free(new);
		return rc;
	}
	/* Against the policy in force now, at the primary. */
	mp_call call = {.consistency = MP_STRONG};
	int64_t ctime;
	rc = fetch_current(ctx, &call, &cur_doc, &cur_len, &ctime, &old);
	free(cur_doc);
	if (rc != EXIT_OK) {
		policy_free(new);
		return rc;
	}
	struct plan *pl = calloc(1, sizeof(*pl));
	if (pl == NULL) {
		policy_free(new);
		policy_free(old);
		return ctx_failf(ctx, NULL, "out of memory");
	}
	pl->ctx = ctx;
	pl->old = old;
	pl->new = new;
	add_sites_of(pl, new);
	add_sites_of(pl, old);
	mp_error err = {0};
	if (plan_walk(pl, "/", &err) < 0) {
		rc = ctx_fail(ctx, "/", &err);
		goto out;
	}
	struct jsonw w;
	if (ctx->json) {
		jsonw_init(&w, stdout);
		jsonw_object_begin(&w);
		jsonw_key(&w, "version");
		jsonw_uint(&w, call.version);
		jsonw_key(&w, "items");
		jsonw_array_begin(&w);
	} else {
		printf("plan for %s against the policy in force at version %llu%s:\n", file,
		       (unsigned long long)call.version, old == NULL ? " (none)" : "");
	}
	plan_items(ctx, &w, "replication", old, new, true);
	plan_items(ctx, &w, "warmup", old, new, false);
	if (ctx->json) {
		jsonw_array_end(&w);
		jsonw_key(&w, "files");
		jsonw_uint(&w, pl->files);
		jsonw_key(&w, "sites");
		jsonw_array_begin(&w);
	} else {
		printf("replication, of %llu files in the namespace:\n",
		       (unsigned long long)pl->files);
		if (pl->n_sites == 0)
			printf("  no site copies or drops anything\n");
	}
	for (size_t k = 0; k < pl->n_sites; k++) {
		const struct plan_site *s = &pl->sites[k];
		if (ctx->json) {
			jsonw_object_begin(&w);
			jsonw_key(&w, "site");
			jsonw_string(&w, s->name);
			jsonw_key(&w, "copy_files");
			jsonw_uint(&w, s->copy_files);
			jsonw_key(&w, "copy_bytes");
			jsonw_uint(&w, s->copy_bytes);
			jsonw_key(&w, "drop_files");
			jsonw_uint(&w, s->drop_files);
			jsonw_key(&w, "drop_bytes");
			jsonw_uint(&w, s->drop_bytes);
			jsonw_object_end(&w);
		} else {
			printf("  site %-20s copy %llu files (%llu bytes), drop %llu files (%llu "
			       "bytes)\n",
			       strcmp(s->name, "*") == 0 ? "* (any other)" : s->name,
			       (unsigned long long)s->copy_files, (unsigned long long)s->copy_bytes,
			       (unsigned long long)s->drop_files,
			       (unsigned long long)s->drop_bytes);
		}
	}
	if (ctx->json) {
		jsonw_array_end(&w);
		jsonw_object_end(&w);
		jsonw_finish(&w);
	}
	rc = EXIT_OK;
out:
	free(pl);
	policy_free(new);
	policy_free(old);
	return rc;
}

/* ---- status ---- */

static void bar(uint64_t done, uint64_t total, char *out, size_t width)
{
	size_t fill = total == 0 ? width : (size_t)((double)done / (double)total * (double)width);
	for (size_t i = 0; i < width; i++)
		out[i] = i < fill ? '#' : '.';
	out[width] = '\0';
}

static int policy_status(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	int opt, rc;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "h", opts)) != -1) {
		if (opt == 'h')
			return commands_print_help(ctx->cmd);
		return EXIT_USAGE;
	}
	if (optind != argc)
		return ctx_usage(ctx, "status takes no operand");
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	mp_replication_rule rules[256];
	size_t n = 0;
	mp_error err = {0};
	if (mp_replication_status(ctx->client, rules, 256, &n, &err) < 0)
		return ctx_fail(ctx, NULL, &err);
	if (n > 256)
		n = 256;
	if (ctx->json) {
		struct jsonw w;
		jsonw_init(&w, stdout);
		jsonw_object_begin(&w);
		jsonw_key(&w, "rules");
		jsonw_array_begin(&w);
		for (size_t i = 0; i < n; i++) {
			const mp_replication_rule *x = &rules[i];
			jsonw_object_begin(&w);
			jsonw_key(&w, "site");
			jsonw_string(&w, x->site);
			jsonw_key(&w, "rule");
			jsonw_string(&w, x->rule);
			const struct {
				const char *k;
				uint64_t v;
			} f[] = {{"pending_objects", x->pending_objects},
			         {"pending_bytes", x->pending_bytes},
			         {"verified_objects", x->verified_objects},
			         {"verified_bytes", x->verified_bytes},
			         {"copied_bytes", x->copied_bytes},
			         {"failures", x->failures},
			         {"failing_objects", x->failing_objects},
			         {"lag_ms", x->lag_ms},
			         {"bytes_per_second", x->bytes_per_second}};
			for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++) {
				jsonw_key(&w, f[k].k);
				jsonw_uint(&w, f[k].v);
			}
			jsonw_key(&w, "last_error");
			jsonw_string(&w, x->last_error);
			jsonw_object_end(&w);
		}
		jsonw_array_end(&w);
		jsonw_object_end(&w);
		jsonw_finish(&w);
		return EXIT_OK;
	}
	if (n == 0) {
		printf("no replication at this site (no replicate rule names it)\n");
		return EXIT_OK;
	}
	printf("%-12s %-24s %-22s %10s %10s %10s %8s %8s\n", "SITE", "RULE", "PROGRESS", "VERIFIED",
	       "PENDING", "RATE/S", "LAG", "FAILING");
	for (size_t i = 0; i < n; i++) {
		const mp_replication_rule *x = &rules[i];
		char b[21], done[16], pend[16], lag[32], rate[16];
		bar(x->verified_bytes, x->verified_bytes + x->pending_bytes, b, 20);
		output_size(x->verified_bytes, done, sizeof(done));
		output_size(x->pending_bytes, pend, sizeof(pend));
		output_duration_ms(x->lag_ms, lag, sizeof(lag));
		output_size(x->bytes_per_second, rate, sizeof(rate));
		printf("%-12s %-24s [%s] %10s %10s %10s %8s %8llu\n", x->site, x->rule, b, done,
		       pend, rate, lag, (unsigned long long)x->failing_objects);
		if (x->last_error[0] != '\0' && x->failing_objects > 0)
			printf("  last error: %s\n", x->last_error);
	}
	return EXIT_OK;
}

int cmd_policy(struct ctx *ctx, int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		if (argc < 2)
			return ctx_usage(ctx, "give a subcommand: check, apply, show or plan");
		return commands_print_help(ctx->cmd);
	}
	if (strcmp(argv[1], "check") == 0)
		return policy_check(ctx, argc - 1, argv + 1);
	if (strcmp(argv[1], "apply") == 0)
		return policy_apply(ctx, argc - 1, argv + 1);
	if (strcmp(argv[1], "show") == 0)
		return policy_show(ctx, argc - 1, argv + 1);
	if (strcmp(argv[1], "plan") == 0)
		return policy_plan(ctx, argc - 1, argv + 1);
	if (strcmp(argv[1], "status") == 0)
		return policy_status(ctx, argc - 1, argv + 1);
	return ctx_usage(
	    ctx, "unknown subcommand '%s' (expected check, apply, show, plan or status)", argv[1]);
}
