/* The metadata commands: ls, stat, mkdir, rm, mv, ln. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "output.h"

static const struct option help_only_opts[] = {
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Checks that every operand from optind on is a remote path. */
static int meta_check_remotes(struct ctx *ctx, int argc, char **argv)
{
	for (int i = optind; i < argc; i++) {
		int rc = ctx_check_remote(ctx, argv[i]);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* For writes with --json: {"version": N}, the highest version the
 * command's writes made (null when none succeeded). */
static void meta_print_version(struct ctx *ctx, uint64_t version)
{
	if (!ctx->json)
		return;
	struct jsonw w;
	jsonw_init(&w, stdout);
	jsonw_object_begin(&w);
	jsonw_key(&w, "version");
	if (version > 0)
		jsonw_uint(&w, version);
	else
		jsonw_null(&w);
	jsonw_object_end(&w);
	jsonw_finish(&w);
}

/* ---- ls ---- */

struct ls_state {
	struct ctx *ctx;
	struct jsonw *w; /* NULL: text */
	const char *dir;
	bool long_format;
	bool tty;
	bool stdout_failed; /* stop listing: main reports the write error */
};

static void ls_print_text(const struct ls_state *st, const mp_node *n, const char *name)
{
	if (st->long_format) {
		char mode[16], when[32];
		output_mode(n->type, n->mode, mode, sizeof(mode));
		output_time_short(n->mtime_ns, when, sizeof(when));
		printf("%s %12" PRIu64 " %s ", mode, n->size, when);
	}
	output_name(stdout, name, st->tty);
	if (st->long_format && n->type == MP_TYPE_SYMLINK && n->target != NULL) {
		fputs(" -> ", stdout);
		output_name(stdout, n->target, st->tty);
	}
	putchar('\n');
}

static int ls_entry(void *arg, const mp_node *entry)
{
	struct ls_state *st = arg;
	/* A big directory piped into head: no point listing the rest. */
	if (ferror(stdout)) {
		st->stdout_failed = true;
		return -EIO;
	}
	if (st->w == NULL) {
		ls_print_text(st, entry, entry->name);
		return 0;
	}
	char *path = ctx_path_join(st->dir, entry->name);
	if (path == NULL)
		return -ENOMEM;
	output_node_json(st->w, entry, path, false, NULL);
	free(path);
	return 0;
}

static int ls_one(struct ls_state *st, const char *path, bool header, bool *first_block)
{
	mp_client *c = st->ctx->client;
	mp_error err = {0};
	mp_node node = {0};
	if (mp_stat(c, path, NULL, &node, &err) < 0)
		return ctx_fail(st->ctx, path, &err);
	int rc = EXIT_OK;
	if (st->w != NULL) {
		jsonw_object_begin(st->w);
		jsonw_field_string(st->w, "path", path);
		jsonw_field_string(st->w, "type", mp_type_name(node.type));
		jsonw_key(st->w, "entries");
		jsonw_array_begin(st->w);
	}
	if (node.type != MP_TYPE_DIR) {
		if (st->w != NULL)
			output_node_json(st->w, &node, path, false, NULL);
		else
			ls_print_text(st, &node, path);
	} else {
		if (header && st->w == NULL) {
			if (!*first_block)
				putchar('\n');
			output_name(stdout, path, st->tty);
			fputs(":\n", stdout);
		}
		st->dir = path;
		if (mp_list(c, path, NULL, ls_entry, st, &err) < 0 && !st->stdout_failed)
			rc = ctx_fail(st->ctx, path, &err);
	}
	*first_block = false;
	if (st->w != NULL) {
		jsonw_array_end(st->w);
		jsonw_object_end(st->w);
	}
	mp_node_clear(&node);
	return rc;
}

int cmd_meta_ls(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"long", no_argument, NULL, 'l'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct ls_state st = {.ctx = ctx, .tty = isatty(STDOUT_FILENO)};
	int opt, rc;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "lh", opts)) != -1) {
		switch (opt) {
		case 'l':
			st.long_format = true;
			break;
		case 'h':
			return commands_print_help(ctx->cmd);
		default:
			return EXIT_USAGE;
		}
	}
	if ((rc = meta_check_remotes(ctx, argc, argv)) != 0)
		return rc;
	if ((rc = ctx_open(ctx)) != 0)
		return rc;

	struct jsonw w;
	if (ctx->json) {
		jsonw_init(&w, stdout);
		jsonw_object_begin(&w);
		jsonw_key(&w, "listings");
		jsonw_array_begin(&w);
		st.w = &w;
	}
	static char root[] = "/";
	char *def[] = {root};
	char **paths = optind < argc ? argv + optind : def;
	int n = optind < argc ? argc - optind : 1;
	bool first_block = true;
	for (int i = 0; i < n && !st.stdout_failed; i++)
		if (ls_one(&st, paths[i], n > 1, &first_block) != EXIT_OK)
			rc = EXIT_FAIL;
	if (ctx->json) {
		jsonw_array_end(&w);
		jsonw_object_end(&w);
		jsonw_finish(&w);
	}
	return rc;
}

/* ---- stat ---- */

static void stat_print_text(const mp_node *n, const char *path, const mp_call *call, bool tty)
{
	char mode[16], when[64];
	fputs("  path: ", stdout);
	output_name(stdout, path, tty);
	output_mode(n->type, n->mode, mode, sizeof(mode));
	printf("\n  type: %s\n  mode: %04o (%s)\n   ino: %" PRIu64 "\nparent: %" PRIu64
	       "\n   uid: %" PRIu32 "\n   gid: %" PRIu32 "\n  size: %" PRIu64 "\n",
	       mp_type_name(n->type), (unsigned)n->mode, mode, n->ino, n->parent, n->uid, n->gid,
	       n->size);
	output_time_long(n->mtime_ns, when, sizeof(when));
	printf(" mtime: %s\n", when);
	output_time_long(n->ctime_ns, when, sizeof(when));
	printf(" ctime: %s\n", when);
	if (n->type == MP_TYPE_SYMLINK) {
		fputs("target: ", stdout);
		output_name(stdout, n->target != NULL ? n->target : "", tty);
		putchar('\n');
	}
	if (n->type == MP_TYPE_FILE) {
		printf("extents: %zu\n", n->n_extents);
		for (size_t i = 0; i < n->n_extents; i++) {
			const mp_extent *e = &n->extents[i];
			printf("  %s ", e->bucket);
			output_name(stdout, e->key, tty);
			printf(" etag %s offset %" PRIu64 " length %" PRIu64 "\n", e->etag,
			       e->offset, e->length);
		}
	}
	printf("version: %" PRIu64 " (%s)\n", call->version, call->served_by);
}

int cmd_meta_stat(struct ctx *ctx, int argc, char **argv)
{
	int opt, rc;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "h", help_only_opts)) != -1) {
		if (opt == 'h')
			return commands_print_help(ctx->cmd);
		return EXIT_USAGE;
	}
	if (optind >= argc)
		return ctx_usage(ctx, "missing PATH operand");
	if ((rc = meta_check_remotes(ctx, argc, argv)) != 0)
		return rc;
	if ((rc = ctx_open(ctx)) != 0)
		return rc;

	bool tty = isatty(STDOUT_FILENO);
	struct jsonw w;
	if (ctx->json) {
		jsonw_init(&w, stdout);
		jsonw_object_begin(&w);
		jsonw_key(&w, "nodes");
		jsonw_array_begin(&w);
	}
	bool printed = false;
	for (int i = optind; i < argc; i++) {
		mp_error err = {0};
		mp_call call = {0};
		mp_node node = {0};
		if (mp_stat(ctx->client, argv[i], &call, &node, &err) < 0) {
			rc = ctx_fail(ctx, argv[i], &err);
			continue;
		}
		if (ctx->json) {
			output_node_json(&w, &node, argv[i], true, &call);
		} else {
			if (printed)
				putchar('\n');
			stat_print_text(&node, argv[i], &call, tty);
		}
		printed = true;
		mp_node_clear(&node);
	}
	if (ctx->json) {
		jsonw_array_end(&w);
		jsonw_object_end(&w);
		jsonw_finish(&w);
	}
	return rc;
}

/* ---- mkdir ---- */

int cmd_meta_mkdir(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"parents", no_argument, NULL, 'p'},
	    {"mode", required_argument, NULL, 'm'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool parents = false;
	uint32_t mode = 0755;
	int opt, rc;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "pm:h", opts)) != -1) {
		switch (opt) {
		case 'p':
			parents = true;
			break;
		case 'm': {
			char *end;
			errno = 0;
			unsigned long v = strtoul(optarg, &end, 8);
			if (optarg[0] < '0' || optarg[0] > '7' || *end != '\0' || errno != 0 ||
			    v > 07777)
				return ctx_usage(ctx, "-m '%s': expected an octal mode 0..7777",
				                 optarg);
			mode = (uint32_t)v;
			break;
		}
		case 'h':
			return commands_print_help(ctx->cmd);
		default:
			return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return ctx_usage(ctx, "missing PATH operand");
	if ((rc = meta_check_remotes(ctx, argc, argv)) != 0)
		return rc;
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	uint64_t version = 0;
	for (int i = optind; i < argc; i++) {
		mp_error err = {0};
		mp_call call = {0};
		if (mp_mkdir(ctx->client, argv[i], mode, parents, &call, &err) < 0)
			rc = ctx_fail(ctx, argv[i], &err);
		else if (call.version > version)
			version = call.version;
	}
	meta_print_version(ctx, version);
	return rc;
}

/* ---- rm ---- */

static bool rm_is_root(const char *path)
{
	for (; *path != '\0'; path++)
		if (*path != '/')
			return false;
	return true;
}

int cmd_meta_rm(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"recursive", no_argument, NULL, 'r'},
	    {"force", no_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool recursive = false, force = false;
	int opt, rc;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "rRfh", opts)) != -1) {
		switch (opt) {
		case 'r':
		case 'R':
			recursive = true;
			break;
		case 'f':
			force = true;
			break;
		case 'h':
			return commands_print_help(ctx->cmd);
		default:
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		if (force)
			return EXIT_OK; /* rm -f with nothing to remove, as rm(1) */
		return ctx_usage(ctx, "missing PATH operand");
	}
	if ((rc = meta_check_remotes(ctx, argc, argv)) != 0)
		return rc;
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	uint64_t version = 0;
	for (int i = optind; i < argc; i++) {
		mp_error err = {0};
		mp_call call = {0};
		if (rm_is_root(argv[i])) {
			rc = ctx_failf(ctx, argv[i], "refusing to remove the root directory");
			continue;
		}
		int e = mp_remove(ctx->client, argv[i], recursive, &call, &err);
		if (e == -ENOENT && force)
			continue;
		if (e < 0)
			rc = ctx_fail(ctx, argv[i], &err);
		else if (call.version > version)
			version = call.version;
	}
	meta_print_version(ctx, version);
	return rc;
}

/* ---- mv ---- */

int cmd_meta_mv(struct ctx *ctx, int argc, char **argv)
{
	int opt, rc;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "h", help_only_opts)) != -1) {
		if (opt == 'h')
			return commands_print_help(ctx->cmd);
		return EXIT_USAGE;
	}
	if (argc - optind < 1)
		return ctx_usage(ctx, "missing FROM and TO operands");
	if (argc - optind < 2)
		return ctx_usage(ctx, "missing TO operand");
	if (argc - optind > 2)
		return ctx_usage(ctx, "extra operand '%s' (mv moves one node)", argv[optind + 2]);
	if ((rc = meta_check_remotes(ctx, argc, argv)) != 0)
		return rc;
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	mp_error err = {0};
	mp_call call = {0};
	if (mp_rename(ctx->client, argv[optind], argv[optind + 1], &call, &err) < 0)
		return ctx_fail(ctx, argv[optind], &err);
	meta_print_version(ctx, call.version);
	return EXIT_OK;
}

/* ---- ln ---- */

int cmd_meta_ln(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"symbolic", no_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool symbolic = false;
	int opt, rc;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "sh", opts)) != -1) {
		switch (opt) {
		case 's':
			symbolic = true;
			break;
		case 'h':
			return commands_print_help(ctx->cmd);
		default:
			return EXIT_USAGE;
		}
	}
	if (!symbolic)
		return ctx_usage(ctx, "hard links are not supported; use ln -s");
	if (argc - optind < 1)
		return ctx_usage(ctx, "missing TARGET and LINKPATH operands");
	if (argc - optind < 2)
		return ctx_usage(ctx, "missing LINKPATH operand");
	if (argc - optind > 2)
		return ctx_usage(ctx, "extra operand '%s'", argv[optind + 2]);
	const char *target = argv[optind], *linkpath = argv[optind + 1];
	if (target[0] == '\0')
		return ctx_usage(ctx, "empty TARGET");
	if ((rc = ctx_check_remote(ctx, linkpath)) != 0)
		return rc;
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	mp_error err = {0};
	mp_call call = {0};
	if (mp_symlink(ctx->client, target, linkpath, &call, &err) < 0)
		return ctx_fail(ctx, linkpath, &err);
	meta_print_version(ctx, call.version);
	return EXIT_OK;
}
