/* mp: the mirrorplane command line. Global options come before the command
 * and are gathered here; the configuration is built, and the handle opened,
 * only when a command first needs it (ctx_open), after it has checked its
 * own arguments. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "ctx.h"
#include "mpconfig.h"

enum {
	OPT_PRIMARY = 256,
	OPT_MIRROR,
	OPT_TOKEN,
	OPT_CONSISTENCY,
	OPT_MAX_STALENESS,
	OPT_TIMEOUT,
	OPT_JSON,
	OPT_NO_PROGRESS,
	OPT_VERSION,
};

static const struct option global_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"primary", required_argument, NULL, OPT_PRIMARY},
    {"mirror", required_argument, NULL, OPT_MIRROR},
    {"token", required_argument, NULL, OPT_TOKEN},
    {"consistency", required_argument, NULL, OPT_CONSISTENCY},
    {"max-staleness", required_argument, NULL, OPT_MAX_STALENESS},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"json", no_argument, NULL, OPT_JSON},
    {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static void global_setting(struct ctx *ctx, int how, const char *flag, const char *name,
                           const char *value)
{
	/* settings has room for one per word of argv. */
	ctx->settings[ctx->n_settings++] = (struct ctx_setting){how, flag, name, value};
}

/* --primary and --mirror: the first one replaces the list (the
 * configuration file's, or the default), later ones append, so that flags
 * override the file as every other flag does. */
static void global_list(struct ctx *ctx, bool *seen, const char *flag, const char *name,
                        const char *value)
{
	global_setting(ctx, *seen ? CTX_ADD : CTX_SET, flag, name, value);
	*seen = true;
}

/* Returns -1 to go on to the command, else the exit status. */
static int global_parse(struct ctx *ctx, int argc, char **argv)
{
	bool seen_primary = false, seen_mirror = false;
	int opt;
	ctx->cmd = "mp";
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+:c:o:qh", global_opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			ctx->config_path = optarg;
			break;
		case OPT_PRIMARY:
			global_list(ctx, &seen_primary, "--primary", "primary", optarg);
			break;
		case OPT_MIRROR:
			global_list(ctx, &seen_mirror, "--mirror", "mirror", optarg);
			break;
		case OPT_TOKEN:
			global_setting(ctx, CTX_SET, "--token", "token", optarg);
			break;
		case OPT_CONSISTENCY:
			if (mp_consistency_parse(optarg, &ctx->consistency) < 0) {
				fprintf(stderr,
				        "mp: --consistency '%s': expected session, strong or "
				        "eventual; see mp --help\n",
				        optarg);
				return EXIT_USAGE;
			}
			break;
		case OPT_MAX_STALENESS:
			global_setting(ctx, CTX_SET, "--max-staleness", "max_staleness", optarg);
			break;
		case OPT_TIMEOUT:
			global_setting(ctx, CTX_SET, "--timeout", "timeout", optarg);
			break;
		case 'o': {
			char *eq = strchr(optarg, '=');
			if (eq == NULL || eq == optarg) {
				fprintf(stderr, "mp: -o '%s': expected NAME=VALUE; see mp --help\n",
				        optarg);
				return EXIT_USAGE;
			}
			/* optarg points into argv, which is ours to cut. */
			*eq = '\0';
			global_setting(ctx, CTX_SET, "-o", optarg, eq + 1);
			break;
		}
		case OPT_JSON:
			ctx->json = true;
			break;
		case OPT_NO_PROGRESS:
			ctx->no_progress = true;
			break;
		case 'q':
			ctx->quiet = true;
			break;
		case 'h':
			commands_usage(stdout);
			return EXIT_OK;
		case OPT_VERSION:
			printf("mp %s\n", MP_VERSION_STRING);
			return EXIT_OK;
		case ':': {
			const char *arg = argv[optind - 1];
			if (strncmp(arg, "--", 2) == 0)
				fprintf(stderr,
				        "mp: option '%s' needs an argument; see mp --help\n", arg);
			else
				fprintf(stderr,
				        "mp: option '-%c' needs an argument; see mp --help\n",
				        optopt);
			return EXIT_USAGE;
		}
		default: {
			const char *arg = optind > 1 ? argv[optind - 1] : "";
			if (strncmp(arg, "--", 2) == 0 && (optopt == 0 || optopt >= 256))
				fprintf(stderr,
				        optopt == 0 ? "mp: unknown option '%.*s'; see mp --help\n"
				                    : "mp: option '%.*s' takes no argument; see mp "
				                      "--help\n",
				        (int)strcspn(arg, "="), arg);
			else
				fprintf(stderr, "mp: unknown option '-%c'; see mp --help\n",
				        optopt);
			return EXIT_USAGE;
		}
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "mp: missing COMMAND; see mp --help\n");
		return EXIT_USAGE;
	}
	return -1;
}

/* Whether stdout is a pipe whose reader has gone: errno may no longer say
 * so when the failed write was long ago. */
static bool main_stdout_gone(void)
{
	struct pollfd pfd = {.fd = STDOUT_FILENO, .events = POLLOUT};
	return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLERR) != 0;
}

/* stdout is flushed before the handle is closed so that a write error is
 * reported under the command that made it. */
static int main_flush_stdout(struct ctx *ctx, int rc)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return rc;
	if (errno == EPIPE || main_stdout_gone()) {
		ctx->sigpipe = true;
		return rc;
	}
	fprintf(stderr, "mp: %s: write to stdout: %s\n", ctx->cmd, ctx_strerror(errno));
	return EXIT_FAIL;
}

int main(int argc, char **argv)
{
	/* A reader that goes away must not kill the process before the
	 * session file is written; writers see EPIPE instead (and the
	 * process dies of SIGPIPE at the end, as a shell expects). */
	signal(SIGPIPE, SIG_IGN);

	struct ctx ctx = {0};
	ctx.settings = calloc((size_t)argc + 1, sizeof(*ctx.settings));
	if (ctx.settings == NULL) {
		fprintf(stderr, "mp: out of memory\n");
		return EXIT_FAIL;
	}
	int rc = global_parse(&ctx, argc, argv);
	if (rc >= 0) {
		free(ctx.settings);
		return rc;
	}
	const char *name = argv[optind];
	const struct command *cmd = commands_find(name);
	if (cmd == NULL) {
		fprintf(stderr, "mp: unknown command '%s'; see mp --help\n", name);
		free(ctx.settings);
		return EXIT_USAGE;
	}
	ctx.cmd = cmd->name;
	rc = cmd->run(&ctx, argc - optind, argv + optind);
	rc = main_flush_stdout(&ctx, rc);
	mp_client_close(ctx.client);
	free(ctx.settings);
	if (ctx.sigpipe) {
		signal(SIGPIPE, SIG_DFL);
		raise(SIGPIPE);
	}
	return rc;
}
