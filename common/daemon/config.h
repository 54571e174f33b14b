/* Table-driven daemon configuration (after Redis's config.c): a daemon
 * describes each option once, in a table of struct config_option, and the same
 * table drives defaults, YAML loading, command-line overrides, checking and
 * printing, so that they can never disagree.
 *
 * The YAML file's top level is a mapping; nested mappings stand for dotted
 * names ("tls: {cert: x}" sets "tls.cert"; a literal "tls.cert: x" key does
 * too). Every key must name an option or a section of the table. Input is
 * bounded: files up to CONFIG_MAX_FILE_BYTES and nesting up to
 * CONFIG_MAX_DEPTH mappings; anchors and aliases are refused.
 *
 * Value syntax by type (the target field's C type in brackets):
 *   STRING   any UTF-8 text                                     [char *]
 *   PATH     non-empty, at most PATH_MAX bytes                  [char *]
 *   HOSTPORT "HOST:PORT" or "[V6ADDR]:PORT", port 1..65535      [char *]
 *   UINT     decimal digits                                     [uint64_t]
 *   BOOL     true/false, yes/no, on/off (any case)              [bool]
 *   DURATION "250ms", "10s", "5m", "2h", "7d"; bare = seconds   [uint64_t ms]
 *   SIZE     "512", "512B", "10KB"/"10MB"/"1G" (powers of 1000),
 *            "64KiB"/"16MiB"/"1Gi" (powers of 1024)             [uint64_t bytes]
 *   ENUM     one of option->choices, stored as its index        [unsigned]
 *   STRLIST  a YAML sequence of scalars, or one scalar of
 *            comma-separated items                              [struct config_strlist]
 * In a file, a YAML null ("key:", "~", "null") unsets a STRING, PATH or
 * HOSTPORT (NULL) and empties a STRLIST; it is an error for the other types.
 *
 * Errors come back as a malloc'd message through ret_err (the caller frees
 * it; ret_err may be NULL). *ret_err is written only when an error is
 * returned, and is left NULL if even the message could not be allocated. */
#ifndef MP_CONFIG_H
#define MP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_FILE_BYTES (1024 * 1024)
#define CONFIG_MAX_DEPTH      8
/* Longest dotted option name, and so longest key path in a file. */
#define CONFIG_MAX_NAME 256

enum config_type {
	CONFIG_STRING,
	CONFIG_PATH,
	CONFIG_UINT,
	CONFIG_BOOL,
	CONFIG_DURATION,
	CONFIG_SIZE,
	CONFIG_HOSTPORT,
	CONFIG_ENUM,
	CONFIG_STRLIST,
};

/* Items are malloc'd and owned by the config struct; config_free frees them. */
struct config_strlist {
	char **items;
	size_t n;
};

/* One option. The table ends with an entry whose name is NULL. A name may not
 * be both an option and a section ("tls" and "tls.cert"). */
struct config_option {
	const char *name; /* dotted for nesting: "tls.cert" */
	enum config_type type;
	size_t offset;              /* offsetof the field in the daemon's config struct */
	uint64_t min, max;          /* UINT/DURATION/SIZE bounds; max 0 means no upper bound */
	const char *default_value;  /* parsed like a value; NULL = unset/0/false/empty */
	const char *help;           /* printed as a comment by config_print */
	const char *const *choices; /* CONFIG_ENUM: NULL-terminated */
};

/* Sets every option of the table to its default. The fields are overwritten,
 * not freed: call it on a zeroed struct or after config_free. A default that
 * does not parse or is out of bounds is a broken table and is fatal(), as is
 * running out of memory here (it runs at start-up). */
void config_defaults(const struct config_option *table, void *target);

/* Loads a YAML file onto target: options the file sets replace target's
 * values, the others keep them (so start from config_defaults). On any error
 * target is left exactly as it was and the message reads
 * "FILE:LINE:COL: what" (1-based), or "FILE: what" when there is no position.
 * Returns 0, -EINVAL for a bad file, -EFBIG when it is too large, -ENOMEM, or
 * the negative errno of opening or reading it.
 *
 * A reload that should forget options removed from the file loads into a
 * fresh struct (config_defaults, config_load_file, then the command-line
 * overrides) and swaps it in only on success. */
int config_load_file(const struct config_option *table, void *target, const char *path,
                     char **ret_err);

/* The same from memory; name stands for the file in messages. */
int config_load_buffer(const struct config_option *table, void *target, const char *name,
                       const void *buf, size_t len, char **ret_err);

/* Sets one option from text, as for a command-line override: "listen" (or
 * "tls.cert"; '-' matches '_' so "max-frame-bytes" works) to value. A STRLIST
 * value is comma-separated. Messages read "'NAME': what", for the caller to
 * prefix. On error target is unchanged. Returns 0, -ENOENT for an unknown
 * name, -EINVAL for a bad value, or -ENOMEM. */
int config_set(const struct config_option *table, void *target, const char *name, const char *value,
               char **ret_err);

/* The option called name (exact match), or NULL. */
const struct config_option *config_find(const struct config_option *table, const char *name);

/* Writes every option as YAML that config_load_file reads back to the same
 * values, sections nested, help as comments; unset strings print as "~". */
void config_print(const struct config_option *table, const void *target, FILE *out);

/* Frees the strings and lists of target and sets those fields to NULL/empty.
 * NULL-safe. Fields the table does not describe are not touched. */
void config_free(const struct config_option *table, void *target);

/* Deep-copies the table's fields from src to dst. dst's fields are
 * overwritten, not freed (as for config_defaults). Returns 0 or -ENOMEM, in
 * which case dst is unchanged. */
int config_copy(const struct config_option *table, void *dst, const void *src);

/* Value parsers and formatters (units_parse_duration, ...) live in units.h. */
#include "units.h"

#endif
