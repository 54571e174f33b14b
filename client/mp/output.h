/* How nodes, sizes, times and durations are shown: in text for people and
 * in JSON for programs. */
#ifndef MP_CLI_OUTPUT_H
#define MP_CLI_OUTPUT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <mirrorplane/mirrorplane.h>

#include "jsonw.h"

/* "1.5 GiB", "812 B"; out of at least 16 bytes. */
void output_size(uint64_t bytes, char *out, size_t len);
/* "drwxr-xr-x"; out of at least 11 bytes. */
void output_mode(enum mp_type type, uint32_t mode, char *out, size_t len);
/* Local time "2024-05-01 12:00" (ls -l). */
void output_time_short(int64_t ns, char *out, size_t len);
/* Local time with nanoseconds and zone (stat). */
void output_time_long(int64_t ns, char *out, size_t len);
/* UTC RFC 3339 with nanoseconds (JSON). */
void output_time_rfc3339(int64_t ns, char *out, size_t len);
/* "850ms", "3.2s", "5m10s", "2h05m". */
void output_duration_ms(uint64_t ms, char *out, size_t len);

/* Writes a name as it is, except that on a terminal control characters
 * become '?' (as ls -q does) so a name cannot drive the terminal. */
void output_name(FILE *f, const char *name, bool tty);

/* A node as a JSON object: path (may be NULL), name, type, attributes, the
 * symlink target and, with extents, the file's layout; with call (may be
 * NULL), the version it was read at and the server that answered. */
void output_node_json(struct jsonw *w, const mp_node *n, const char *path, bool extents,
                      const mp_call *call);

#endif
