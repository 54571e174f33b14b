/* The commands that move file data or make files of objects: put, get,
 * cat and import. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "output.h"
#include "progress.h"

/* Where a tree named `name` lands: inside dest when dest is an existing
 * directory (as cp -r does), else at dest itself. malloc'd; NULL: no memory. */
static char *tree_target(const char *dest, bool dest_is_dir, const char *name)
{
	if (dest_is_dir && name[0] != '\0')
		return ctx_path_join(dest, name);
	return strdup(dest);
}

static const struct option recursive_opts[] = {
    {"recursive", no_argument, NULL, 'r'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Parses [-r] [-h]: returns -1 to go on, else the exit status. */
static int transfer_parse(struct ctx *ctx, int argc, char **argv, bool *recursive)
{
	int opt;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "rRh", recursive_opts)) != -1) {
		switch (opt) {
		case 'r':
		case 'R':
			*recursive = true;
			break;
		case 'h':
			return commands_print_help(ctx->cmd);
		default:
			return EXIT_USAGE;
		}
	}
	return -1;
}

static void transfer_print_version(struct ctx *ctx, uint64_t version)
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

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* ---- put ---- */

/* All of fd, into memory. 0 or a negative errno. */
static int transfer_read_all(int fd, char **ret, size_t *ret_len)
{
	size_t cap = 64 * 1024, len = 0;
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
	    (uint64_t)st.st_size < SIZE_MAX / 2)
		cap = (size_t)st.st_size + 1;
	char *buf = malloc(cap);
	if (buf == NULL)
		return -ENOMEM;
	for (;;) {
		if (len == cap) {
			if (cap > SIZE_MAX / 2) {
				free(buf);
				return -EFBIG;
			}
			char *nb = realloc(buf, cap * 2);
			if (nb == NULL) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			free(buf);
			return -e;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

static int put_stdin(struct ctx *ctx, const char *remote, struct progress *p)
{
	char *data = NULL;
	size_t len = 0;
	int e = transfer_read_all(STDIN_FILENO, &data, &len);
	if (e < 0)
		return ctx_failf(ctx, "-", "reading standard input: %s", ctx_strerror(-e));
	int rc = ctx_open(ctx);
	if (rc != 0) {
		free(data);
		return rc;
	}
	mp_error err = {0};
	mp_call call = {0};
	mp_transfer_opts topts;
	progress_begin(p, len, 1, &topts);
	e = mp_put_buffer(ctx->client, data, len, remote, &topts, &call, &err);
	progress_end(p, e == 0);
	free(data);
	if (e < 0)
		return ctx_fail(ctx, remote, &err);
	progress_finish(p);
	transfer_print_version(ctx, call.version);
	return EXIT_OK;
}

/* The name a local directory takes below a remote directory: its last
 * component, from its real path when it has none of its own ("." or "/"
 * give "" and the tree goes into the directory itself). */
static void put_tree_name(const char *local, char *buf, size_t len)
{
	ctx_basename(local, buf, len);
	if (strcmp(buf, ".") != 0 && strcmp(buf, "..") != 0 && buf[0] != '\0')
		return;
	char *real = realpath(local, NULL);
	if (real == NULL) {
		buf[0] = '\0';
		return;
	}
	ctx_basename(real, buf, len);
	free(real);
}

struct put_item {
	const char *local;
	struct stat st;
	bool ok; /* stat worked and the type is one put takes */
};

int cmd_transfer_put(struct ctx *ctx, int argc, char **argv)
{
	bool recursive = false;
	int rc = transfer_parse(ctx, argc, argv, &recursive);
	if (rc >= 0)
		return rc;
	int n = argc - optind;
	if (n == 0)
		return ctx_usage(ctx, "missing LOCAL and REMOTE operands");
	if (n == 1)
		return ctx_usage(ctx, "missing REMOTE operand");
	const char *remote = argv[argc - 1];
	if ((rc = ctx_check_remote(ctx, remote)) != 0)
		return rc;
	int nl = n - 1;
	char **locals = argv + optind;
	for (int i = 0; i < nl; i++) {
		if (strcmp(locals[i], "-") == 0 && nl > 1)
			return ctx_usage(ctx, "- (standard input) must be the only LOCAL");
		if (locals[i][0] == '\0')
			return ctx_usage(ctx, "empty LOCAL operand");
	}

	struct progress *p = progress_new(ctx_progress_wanted(ctx));
	if (p == NULL)
		return ctx_failf(ctx, NULL, "out of memory");
	if (strcmp(locals[0], "-") == 0) {
		rc = put_stdin(ctx, remote, p);
		progress_free(p);
		return rc;
	}

	struct put_item *items = calloc((size_t)nl, sizeof(*items));
	if (items == NULL) {
		progress_free(p);
		return ctx_failf(ctx, NULL, "out of memory");
	}
	bool any_tree = false;
	rc = EXIT_OK;
	for (int i = 0; i < nl; i++) {
		struct put_item *it = &items[i];
		it->local = locals[i];
		if (stat(it->local, &it->st) < 0) {
			rc = ctx_failf(ctx, it->local, "%s", ctx_strerror(errno));
		} else if (S_ISDIR(it->st.st_mode) && !recursive) {
			rc = ctx_failf(ctx, it->local, "is a directory (use -r)");
		} else if (!S_ISDIR(it->st.st_mode) && !S_ISREG(it->st.st_mode)) {
			rc = ctx_failf(ctx, it->local,
			               "not a regular file (use - to read standard input)");
		} else {
			it->ok = true;
			any_tree |= S_ISDIR(it->st.st_mode);
		}
	}

	bool any_ok = false;
	for (int i = 0; i < nl; i++)
		any_ok |= items[i].ok;
	if (!any_ok)
		goto out;
	int e = ctx_open(ctx);
	if (e != 0) {
		rc = e;
		goto out;
	}
	/* Whether REMOTE is an existing directory decides where trees go, and
	 * several operands need one. */
	bool remote_is_dir = false;
	if (nl > 1 || any_tree) {
		mp_error err = {0};
		mp_node node = {0};
		e = mp_stat(ctx->client, remote, NULL, &node, &err);
		if (e < 0 && e != -ENOENT) {
			rc = ctx_fail(ctx, remote, &err);
			goto out;
		}
		remote_is_dir = e == 0 && node.type == MP_TYPE_DIR;
		mp_node_clear(&node);
		if (nl > 1 && !remote_is_dir) {
			rc = ctx_failf(ctx, remote,
			               e == 0 ? "not a directory" : "no such directory");
			goto out;
		}
	}

	for (int i = 0; i < nl; i++)
		if (items[i].ok && S_ISREG(items[i].st.st_mode))
			progress_expect(p, (uint64_t)items[i].st.st_size, 1);
	uint64_t version = 0;
	for (int i = 0; i < nl; i++) {
		struct put_item *it = &items[i];
		if (!it->ok)
			continue;
		mp_error err = {0};
		mp_call call = {0};
		mp_transfer_opts topts;
		if (S_ISDIR(it->st.st_mode)) {
			char name[NAME_MAX + 1];
			put_tree_name(it->local, name, sizeof(name));
			char *target = tree_target(remote, remote_is_dir, name);
			if (target == NULL) {
				rc = ctx_failf(ctx, it->local, "out of memory");
				break;
			}
			progress_begin(p, 0, 0, &topts);
			e = mp_put_tree(ctx->client, it->local, target, &topts, &call, &err);
			free(target);
		} else {
			progress_begin(p, (uint64_t)it->st.st_size, 1, &topts);
			e = mp_put_file(ctx->client, it->local, remote, &topts, &call, &err);
		}
		progress_end(p, e == 0);
		if (e < 0)
			rc = ctx_fail(ctx, it->local, &err);
		else
			version = max_u64(version, call.version);
	}
	progress_finish(p);
	transfer_print_version(ctx, version);
out:
	free(items);
	progress_free(p);
	return rc;
}

/* ---- get and cat ---- */

/* Writes to a file descriptor; remembers why a write failed, so that a
 * reader that went away (EPIPE) is told from a failed read. */
struct sink {
	int fd;
	int err; /* errno of the failed write, 0 while all is well */
};

static int sink_write(void *arg, const void *data, size_t len)
{
	struct sink *s = arg;
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(s->fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			s->err = n < 0 ? errno : EIO;
			return -s->err;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads one file to stdout. Returns the exit status; *stop is set when
 * stdout is gone and there is no point going on. */
static int transfer_to_stdout(struct ctx *ctx, const char *remote, struct progress *p,
                              uint64_t size, uint64_t *version, bool *stop)
{
	struct sink s = {.fd = STDOUT_FILENO};
	mp_error err = {0};
	mp_call call = {0};
	mp_transfer_opts topts;
	/* Flushed first in case anything went out through stdio. */
	fflush(stdout);
	progress_begin(p, size, 1, &topts);
	int e = mp_read(ctx->client, remote, 0, 0, sink_write, &s, &topts, &call, &err);
	progress_end(p, e == 0);
	if (e == 0) {
		*version = max_u64(*version, call.version);
		return EXIT_OK;
	}
	if (s.err == EPIPE) {
		/* Quietly, as cat does when its reader is gone. */
		ctx->sigpipe = true;
		*stop = true;
		return EXIT_FAIL;
	}
	if (s.err != 0) {
		*stop = true;
		return ctx_failf(ctx, remote, "writing standard output: %s", ctx_strerror(s.err));
	}
	return ctx_fail(ctx, remote, &err);
}

int cmd_transfer_cat(struct ctx *ctx, int argc, char **argv)
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
		return EXIT_USAGE;
	}
	if (optind >= argc)
		return ctx_usage(ctx, "missing PATH operand");
	for (int i = optind; i < argc; i++)
		if ((rc = ctx_check_remote(ctx, argv[i])) != 0)
			return rc;
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	uint64_t version = 0;
	bool stop = false;
	for (int i = optind; i < argc && !stop; i++)
		if (transfer_to_stdout(ctx, argv[i], NULL, 0, &version, &stop) != EXIT_OK)
			rc = EXIT_FAIL;
	return rc;
}

struct get_item {
	const char *remote;
	enum mp_type type;
	uint64_t size;
	bool ok;
};

int cmd_transfer_get(struct ctx *ctx, int argc, char **argv)
{
	bool recursive = false;
	int rc = transfer_parse(ctx, argc, argv, &recursive);
	if (rc >= 0)
		return rc;
	int n = argc - optind;
	if (n == 0)
		return ctx_usage(ctx, "missing REMOTE and LOCAL operands");
	if (n == 1)
		return ctx_usage(ctx, "missing LOCAL operand");
	const char *local = argv[argc - 1];
	if (local[0] == '\0')
		return ctx_usage(ctx, "empty LOCAL operand");
	int nr = n - 1;
	char **remotes = argv + optind;
	for (int i = 0; i < nr; i++)
		if ((rc = ctx_check_remote(ctx, remotes[i])) != 0)
			return rc;
	bool to_stdout = strcmp(local, "-") == 0;
	if (to_stdout && recursive)
		return ctx_usage(ctx, "-r cannot write to standard output");

	bool local_is_dir = false;
	struct stat st;
	if (!to_stdout) {
		local_is_dir = stat(local, &st) == 0 && S_ISDIR(st.st_mode);
		if (nr > 1 && !local_is_dir)
			return ctx_failf(ctx, local, "not a directory");
	}
	if ((rc = ctx_open(ctx)) != 0)
		return rc;

	struct get_item *items = calloc((size_t)nr, sizeof(*items));
	/* On a terminal, a bar would be drawn over the data. */
	struct progress *p =
	    progress_new(ctx_progress_wanted(ctx) && !(to_stdout && isatty(STDOUT_FILENO)));
	if (items == NULL || p == NULL) {
		free(items);
		progress_free(p);
		return ctx_failf(ctx, NULL, "out of memory");
	}
	for (int i = 0; i < nr; i++) {
		struct get_item *it = &items[i];
		mp_error err = {0};
		mp_node node = {0};
		it->remote = remotes[i];
		if (mp_stat(ctx->client, it->remote, NULL, &node, &err) < 0) {
			rc = ctx_fail(ctx, it->remote, &err);
			continue;
		}
		it->type = node.type;
		it->size = node.size;
		mp_node_clear(&node);
		if (it->type == MP_TYPE_DIR && !recursive) {
			rc = ctx_failf(ctx, it->remote, "is a directory (use -r)");
			continue;
		}
		it->ok = true;
		if (it->type == MP_TYPE_FILE)
			progress_expect(p, it->size, 1);
	}

	uint64_t version = 0;
	bool stop = false;
	for (int i = 0; i < nr && !stop; i++) {
		struct get_item *it = &items[i];
		if (!it->ok)
			continue;
		if (to_stdout) {
			if (transfer_to_stdout(ctx, it->remote, p, it->size, &version, &stop) !=
			    EXIT_OK)
				rc = EXIT_FAIL;
			continue;
		}
		mp_error err = {0};
		mp_call call = {0};
		mp_transfer_opts topts;
		int e;
		if (it->type == MP_TYPE_DIR) {
			char name[NAME_MAX + 1];
			ctx_basename(it->remote, name, sizeof(name));
			char *target = tree_target(local, local_is_dir, name);
			if (target == NULL) {
				rc = ctx_failf(ctx, it->remote, "out of memory");
				break;
			}
			progress_begin(p, 0, 0, &topts);
			e = mp_get_tree(ctx->client, it->remote, target, &topts, &call, &err);
			free(target);
		} else {
			bool file = it->type == MP_TYPE_FILE;
			progress_begin(p, file ? it->size : 0, file ? 1 : 0, &topts);
			e = mp_get_file(ctx->client, it->remote, local, &topts, &call, &err);
		}
		progress_end(p, e == 0);
		if (e < 0)
			rc = ctx_fail(ctx, it->remote, &err);
		else
			version = max_u64(version, call.version);
	}
	progress_finish(p);
	if (!to_stdout) /* stdout holds the data */
		transfer_print_version(ctx, version);
	free(items);
	progress_free(p);
	return rc;
}

/* ---- import ---- */

int cmd_transfer_import(struct ctx *ctx, int argc, char **argv)
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
		return EXIT_USAGE;
	}
	int n = argc - optind;
	if (n == 0)
		return ctx_usage(ctx, "missing SOURCE and DEST operands");
	if (n == 1)
		return ctx_usage(ctx, "missing DEST operand");
	if (n > 2)
		return ctx_usage(ctx, "extra operand '%s'", argv[optind + 2]);
	const char *source = argv[optind], *dest = argv[optind + 1];
	/* "s3://..." is a likely mistake: buckets are named by alias. */
	size_t alias_len = strcspn(source, "/");
	if (alias_len == 0 || memchr(source, ':', alias_len) != NULL)
		return ctx_usage(ctx,
		                 "SOURCE '%s': expected ALIAS or ALIAS/PREFIX, a bucket alias "
		                 "of the configuration",
		                 source);
	if ((rc = ctx_check_remote(ctx, dest)) != 0)
		return rc;
	if ((rc = ctx_open(ctx)) != 0)
		return rc;

	struct progress *p = progress_new(ctx_progress_wanted(ctx));
	if (p == NULL)
		return ctx_failf(ctx, NULL, "out of memory");
	mp_import_stats stats = {0};
	mp_error err = {0};
	mp_call call = {0};
	mp_transfer_opts topts;
	progress_begin(p, 0, 0, &topts);
	int e = mp_import(ctx->client, source, dest, &topts, &stats, &call, &err);
	progress_end(p, e == 0);
	progress_free(p);
	if (e < 0) {
		char *both = NULL;
		if (asprintf(&both, "%s %s", source, dest) < 0)
			both = NULL;
		rc = ctx_fail(ctx, both != NULL ? both : source, &err);
		free(both);
		return rc;
	}
	if (ctx->json) {
		struct jsonw w;
		jsonw_init(&w, stdout);
		jsonw_object_begin(&w);
		jsonw_field_string(&w, "source", source);
		jsonw_field_string(&w, "dest", dest);
		jsonw_key(&w, "version");
		if (call.version > 0)
			jsonw_uint(&w, call.version);
		else
			jsonw_null(&w);
		jsonw_field_uint(&w, "listed", stats.listed);
		jsonw_field_uint(&w, "created", stats.created);
		jsonw_field_uint(&w, "updated", stats.updated);
		jsonw_field_uint(&w, "unchanged", stats.unchanged);
		jsonw_field_uint(&w, "removed", stats.removed);
		jsonw_field_uint(&w, "skipped", stats.skipped);
		jsonw_field_uint(&w, "bytes", stats.bytes);
		jsonw_object_end(&w);
		jsonw_finish(&w);
	} else if (!ctx->quiet) {
		char size[16];
		output_size(stats.bytes, size, sizeof(size));
		printf("%s -> %s: %" PRIu64 " objects (%s): %" PRIu64 " created, %" PRIu64
		       " updated, %" PRIu64 " unchanged, %" PRIu64 " removed, %" PRIu64
		       " skipped; version %" PRIu64 "\n",
		       source, dest, stats.listed, size, stats.created, stats.updated,
		       stats.unchanged, stats.removed, stats.skipped, call.version);
	}
	return EXIT_OK;
}
