/* What every mp command shares: the global options, the client handle
 * (opened on first use, so usage errors come before any configuration is
 * read), and the one-line error and usage reports. */
#ifndef MP_CLI_CTX_H
#define MP_CLI_CTX_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include <mirrorplane/mirrorplane.h>

/* Exit statuses. */
#define EXIT_OK    0
#define EXIT_FAIL  1
#define EXIT_USAGE 2

/* A global option that changes the configuration, applied in command-line
 * order after the configuration file. */
struct ctx_setting {
	enum { CTX_SET, CTX_ADD } how;
	const char *flag; /* as the user wrote it, for errors: "--timeout", "-o" */
	const char *name; /* the configuration option */
	const char *value;
};

struct ctx {
	const char *config_path; /* -c; NULL: $MP_CONFIG */
	struct ctx_setting *settings;
	int n_settings;
	enum mp_consistency consistency; /* MP_CONSISTENCY_DEFAULT: as configured */
	bool json, quiet, no_progress;

	const char *cmd;   /* the command being run, for messages */
	mp_client *client; /* NULL until ctx_open */
	bool sigpipe;      /* stdout's reader went away: die of SIGPIPE at the end */
};

/* Builds the configuration (the default session file, the file, then the
 * settings) and opens the handle into ctx->client. Returns 0, or the exit
 * status after printing why. */
int ctx_open(struct ctx *ctx);

/* "mp: CMD: <what>; see mp help CMD" on stderr. Returns EXIT_USAGE. */
int ctx_usage(struct ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "mp: CMD OPERAND: <err->message>" on stderr (operand may be NULL).
 * Returns EXIT_FAIL. */
int ctx_fail(struct ctx *ctx, const char *operand, const mp_error *err);
/* "mp: CMD OPERAND: <what>" on stderr. Returns EXIT_FAIL. */
int ctx_failf(struct ctx *ctx, const char *operand, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* strerror with a lower-case first letter, as the library words errors. */
const char *ctx_strerror(int errnum);

/* A remote operand must be an absolute path: 0, or a usage error (printed)
 * naming it. */
int ctx_check_remote(struct ctx *ctx, const char *operand);

/* getopt_long for a command, whose argv[0] is the command name: call
 * ctx_getopt_begin first. Returns the option, -1 at the end of the options,
 * or CTX_OPT_ERROR after printing a usage error about an unknown option or
 * a missing argument. optstring needs no leading ':'. */
#define CTX_OPT_ERROR (-2)
void ctx_getopt_begin(void);
int ctx_getopt(struct ctx *ctx, int argc, char **argv, const char *optstring,
               const struct option *longopts);

/* Whether a progress bar may be drawn on stderr. */
bool ctx_progress_wanted(const struct ctx *ctx);

/* dir + "/" + name, without doubling a '/'; malloc'd, NULL when out of
 * memory. */
char *ctx_path_join(const char *dir, const char *name);
/* The last component of a path, without trailing slashes, in buf ("" for
 * "/"). */
const char *ctx_basename(const char *path, char *buf, size_t len);

#endif
