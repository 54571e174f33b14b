/* The shared state of one mp run and the way it reports errors. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctx.h"

/* Where the session version is kept between runs, so that `mp put x` then
 * `mp cat x` in a shell reads its own write at a lagging mirror. The
 * directory is made 0700; one that is not ours or that others may write to
 * (a shared /tmp invites a planted directory or symlink) is not used, and
 * the run goes on without a session file. */
static bool ctx_session_default(char *buf, size_t len)
{
	char dir[PATH_MAX];
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;
	if (xdg != NULL && xdg[0] == '/')
		n = snprintf(dir, sizeof(dir), "%s/mirrorplane", xdg);
	else
		n = snprintf(dir, sizeof(dir), "/tmp/mirrorplane-%lu", (unsigned long)getuid());
	if (n < 0 || (size_t)n >= sizeof(dir))
		return false;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return false;
	struct stat st;
	if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
	    (st.st_mode & 022) != 0)
		return false;
	n = snprintf(buf, len, "%s/session", dir);
	return n >= 0 && (size_t)n < len;
}

static int ctx_apply(struct ctx *ctx, mp_config *cfg)
{
	mp_error err = {0};
	char session[PATH_MAX];
	/* First, so that a configuration file or -o session_file=... wins
	 * (with -o, not even the directory is made). */
	bool given = false;
	for (int i = 0; i < ctx->n_settings; i++)
		given |= strcmp(ctx->settings[i].name, "session_file") == 0;
	if (!given && ctx_session_default(session, sizeof(session)))
		(void)mp_config_set(cfg, "session_file", session, NULL);
	if (mp_config_load(cfg, ctx->config_path, &err) < 0) {
		fprintf(stderr, "mp: %s: %s\n", ctx->cmd, err.message);
		return EXIT_USAGE;
	}
	for (int i = 0; i < ctx->n_settings; i++) {
		const struct ctx_setting *s = &ctx->settings[i];
		int rc = s->how == CTX_ADD ? mp_config_add(cfg, s->name, s->value, &err)
		                           : mp_config_set(cfg, s->name, s->value, &err);
		if (rc < 0) {
			fprintf(stderr, "mp: %s: %s: %s\n", ctx->cmd, s->flag, err.message);
			return EXIT_USAGE;
		}
	}
	return 0;
}

int ctx_open(struct ctx *ctx)
{
	if (ctx->client != NULL)
		return 0;
	mp_error err = {0};
	mp_config *cfg = NULL;
	if (mp_config_new(&cfg, &err) < 0)
		return ctx_fail(ctx, NULL, &err);
	int rc = ctx_apply(ctx, cfg);
	if (rc != 0)
		goto out;
	if (mp_client_open(cfg, &ctx->client, &err) < 0) {
		ctx->client = NULL;
		rc = ctx_fail(ctx, NULL, &err);
		if (err.code == -EINVAL)
			rc = EXIT_USAGE;
		goto out;
	}
	if (ctx->consistency != MP_CONSISTENCY_DEFAULT) {
		int e = mp_client_set_consistency(ctx->client, ctx->consistency, 0);
		if (e < 0) {
			rc = ctx_failf(ctx, NULL, "--consistency %s: %s",
			               mp_consistency_name(ctx->consistency), ctx_strerror(-e));
			goto out;
		}
	}
out:
	mp_config_free(cfg);
	return rc;
}

int ctx_usage(struct ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "mp: %s: ", ctx->cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "; see mp help %s\n", ctx->cmd);
	return EXIT_USAGE;
}

static void ctx_prefix(struct ctx *ctx, const char *operand)
{
	if (operand != NULL)
		fprintf(stderr, "mp: %s %s: ", ctx->cmd, operand);
	else
		fprintf(stderr, "mp: %s: ", ctx->cmd);
}

int ctx_fail(struct ctx *ctx, const char *operand, const mp_error *err)
{
	const char *msg = err->message;
	/* The library's message may start by naming the path the prefix
	 * already names: "mp: cat /x: /x: no such ..." says it twice. */
	size_t n = operand != NULL ? strlen(operand) : 0;
	if (n > 0 && strncmp(msg, operand, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
		msg += n + 2;
	ctx_prefix(ctx, operand);
	if (msg[0] != '\0')
		fprintf(stderr, "%s\n", msg);
	else
		fprintf(stderr, "%s\n", ctx_strerror(-err->code));
	return EXIT_FAIL;
}

int ctx_failf(struct ctx *ctx, const char *operand, const char *fmt, ...)
{
	va_list ap;
	ctx_prefix(ctx, operand);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_FAIL;
}

const char *ctx_strerror(int errnum)
{
	static char buf[128];
	snprintf(buf, sizeof(buf), "%s", strerror(errnum));
	buf[0] = (char)tolower((unsigned char)buf[0]);
	return buf;
}

int ctx_check_remote(struct ctx *ctx, const char *operand)
{
	if (operand[0] != '/')
		return ctx_usage(ctx, "'%s': remote paths are absolute (start with /)", operand);
	if (strlen(operand) >= PATH_MAX)
		return ctx_usage(ctx, "remote path longer than %d bytes", PATH_MAX - 1);
	return 0;
}

/* The text of the option getopt just refused: a long option as written (up
 * to any '='), else the short option character. */
static void ctx_bad_option(struct ctx *ctx, char **argv, const char *optstring, bool missing)
{
	const char *arg = optind > 1 ? argv[optind - 1] : "";
	bool is_long = strncmp(arg, "--", 2) == 0 &&
	               (optopt == 0 || optopt >= 256 || strchr(optstring, optopt) != NULL);
	if (missing) {
		/* An option missing its argument is always the last word. */
		if (strncmp(arg, "--", 2) == 0)
			ctx_usage(ctx, "option '%s' needs an argument", arg);
		else
			ctx_usage(ctx, "option '-%c' needs an argument", optopt);
	} else if (is_long) {
		int n = (int)strcspn(arg, "=");
		if (optopt == 0)
			ctx_usage(ctx, "unknown option '%.*s'", n, arg);
		else
			ctx_usage(ctx, "option '%.*s' takes no argument", n, arg);
	} else {
		ctx_usage(ctx, "unknown option '-%c'", optopt);
	}
}

void ctx_getopt_begin(void)
{
	/* Not 1: glibc re-reads the ordering mode only when optind is 0. The
	 * global parse stops at the command ('+'); commands let options and
	 * operands mix, as GNU tools do (-- before an operand that starts with
	 * '-'). */
	optind = 0;
	opterr = 0;
}

int ctx_getopt(struct ctx *ctx, int argc, char **argv, const char *optstring,
               const struct option *longopts)
{
	char opts[64];
	/* ':' first: a missing argument returns ':' rather than '?', so that
	 * the two errors can be told apart. */
	snprintf(opts, sizeof(opts), ":%s", optstring);
	int opt = getopt_long(argc, argv, opts, longopts, NULL);
	if (opt == '?' || opt == ':') {
		ctx_bad_option(ctx, argv, optstring, opt == ':');
		return CTX_OPT_ERROR;
	}
	return opt;
}

bool ctx_progress_wanted(const struct ctx *ctx)
{
	return !ctx->json && !ctx->quiet && !ctx->no_progress && isatty(STDERR_FILENO);
}

char *ctx_path_join(const char *dir, const char *name)
{
	size_t dl = strlen(dir);
	while (dl > 1 && dir[dl - 1] == '/')
		dl--;
	char *out;
	if (dl == 1 && dir[0] == '/')
		dl = 0;
	if (asprintf(&out, "%.*s/%s", (int)dl, dir, name) < 0)
		return NULL;
	return out;
}

const char *ctx_basename(const char *path, char *buf, size_t len)
{
	size_t end = strlen(path);
	while (end > 0 && path[end - 1] == '/')
		end--;
	size_t start = end;
	while (start > 0 && path[start - 1] != '/')
		start--;
	snprintf(buf, len, "%.*s", (int)(end - start), path + start);
	return buf;
}
