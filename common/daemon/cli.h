/* What the daemons' command lines share: a YAML file (-c), --NAME VALUE
 * overrides of its options (kept, so that a reload applies them again), a
 * check after loading, and -n / --print-config. */
#ifndef MP_CLI_H
#define MP_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define CLI_OVERRIDES_MAX 32

struct cli_overrides {
	struct {
		const char *name; /* a config option, e.g. "listen" */
		const char *value;
	} items[CLI_OVERRIDES_MAX];
	int n;
};

/* Returns 0 or -E2BIG when there are too many. */
int cli_override(struct cli_overrides *o, const char *name, const char *value);

/* Loads defaults, then path (if not NULL), then the overrides, then runs
 * check, all into a scratch struct of size bytes that replaces *cfg only on
 * success (cfg's old contents are not freed: pass an empty struct).
 * ret_err (malloc'd) names the file position or the option. */
int cli_load_config(const struct config_option *table, void *cfg, size_t size, const char *path,
                    const struct cli_overrides *o, int (*check)(void *cfg, char **ret_err),
                    char **ret_err);

/* -n prints "configuration OK"; --print-config prints every option. */
void cli_check_or_print(const struct config_option *table, const void *cfg, bool print);

#endif
