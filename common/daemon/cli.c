#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_override(struct cli_overrides *o, const char *name, const char *value)
{
	if (o->n >= CLI_OVERRIDES_MAX)
		return -E2BIG;
	o->items[o->n].name = name;
	o->items[o->n].value = value;
	o->n++;
	return 0;
}

int cli_load_config(const struct config_option *table, void *cfg, size_t size, const char *path,
                    const struct cli_overrides *o, int (*check)(void *cfg, char **ret_err),
                    char **ret_err)
{
	void *c = calloc(1, size);
	if (c == NULL)
		return -ENOMEM;
	config_defaults(table, c);
	int r = 0;
	if (path != NULL)
		r = config_load_file(table, c, path, ret_err);
	for (int i = 0; r == 0 && o != NULL && i < o->n; i++) {
		char *err = NULL;
		r = config_set(table, c, o->items[i].name, o->items[i].value, &err);
		if (r < 0) {
			if (asprintf(ret_err, "--%s: %s", o->items[i].name, err ? err : "invalid") <
			    0)
				*ret_err = NULL;
			free(err);
		}
	}
	if (r == 0 && check != NULL)
		r = check(c, ret_err);
	if (r < 0) {
		config_free(table, c);
		free(c);
		return r;
	}
	memcpy(cfg, c, size);
	free(c);
	return 0;
}

void cli_check_or_print(const struct config_option *table, const void *cfg, bool print)
{
	if (print)
		config_print(table, cfg, stdout);
	else
		printf("configuration OK\n");
}
