/* The table of mp's commands, their help, and the entry point of each
 * (in cmd_meta.c, cmd_transfer.c and cmd_status.c). A command gets its own
 * argv (argv[0] is its name) and returns the exit status. */
#ifndef MP_CLI_COMMANDS_H
#define MP_CLI_COMMANDS_H

#include <stdio.h>

#include "ctx.h"

typedef int (*command_fn)(struct ctx *ctx, int argc, char **argv);

struct command {
	const char *name;
	command_fn run;
	const char *synopsis; /* after "mp " */
	const char *summary;  /* one line */
	const char *details;  /* options and behaviour, may be NULL */
};

/* NULL when there is no such command. */
const struct command *commands_find(const char *name);
/* mp --help. */
void commands_usage(FILE *out);
/* mp help CMD, mp CMD --help. */
void commands_help(FILE *out, const struct command *cmd);
/* Prints the help of the command named name on stdout; returns EXIT_OK. */
int commands_print_help(const char *name);
/* mp help [CMD]. */
int commands_help_cmd(struct ctx *ctx, int argc, char **argv);

int cmd_meta_ls(struct ctx *ctx, int argc, char **argv);
int cmd_meta_stat(struct ctx *ctx, int argc, char **argv);
int cmd_meta_mkdir(struct ctx *ctx, int argc, char **argv);
int cmd_meta_rm(struct ctx *ctx, int argc, char **argv);
int cmd_meta_mv(struct ctx *ctx, int argc, char **argv);
int cmd_meta_ln(struct ctx *ctx, int argc, char **argv);
int cmd_transfer_put(struct ctx *ctx, int argc, char **argv);
int cmd_transfer_get(struct ctx *ctx, int argc, char **argv);
int cmd_transfer_cat(struct ctx *ctx, int argc, char **argv);
int cmd_warmup(struct ctx *ctx, int argc, char **argv);
int cmd_transfer_import(struct ctx *ctx, int argc, char **argv);
int cmd_status_status(struct ctx *ctx, int argc, char **argv);
int cmd_status_version(struct ctx *ctx, int argc, char **argv);
int cmd_policy(struct ctx *ctx, int argc, char **argv);
int cmd_gc(struct ctx *ctx, int argc, char **argv);
int cmd_mount(struct ctx *ctx, int argc, char **argv);

#endif
