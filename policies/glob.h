/* Path globs of policies: absolute patterns matched against absolute,
 * normalized namespace paths, component by component.
 *
 *   *   inside one component: any run of bytes except '/' ("*.jpg", "ckpt-*")
 *   **  as a whole component: any number of components, zero included, so
 *       "/models" followed by "/" and "**" matches "/models" itself and
 *       everything below it
 *
 * Every other byte is literal (there is no '?', no brackets, no escape).
 * A pattern is refused when it is not absolute, has an empty component
 * ("//", a trailing '/'), a "." or ".." component, "**" glued to other text
 * ("a**", "**.bin"), a NUL or control byte, or is longer than GLOB_MAX_LEN
 * bytes or GLOB_MAX_COMPONENTS components. "/" alone matches only the root. */
#ifndef MP_POLICY_GLOB_H
#define MP_POLICY_GLOB_H

#include <stdbool.h>
#include <stddef.h>

#define GLOB_MAX_LEN        4096
#define GLOB_MAX_COMPONENTS 256

struct glob;

/* Compiles the len bytes at pattern. On error writes a message naming what
 * is wrong (without the pattern itself) into err and returns -EINVAL, or
 * -ENOMEM. The glob is the caller's: glob_free it. */
int glob_compile(const char *pattern, size_t len, struct glob **ret, char *err, size_t errlen);

/* NULL-safe. */
void glob_free(struct glob *g);

/* The pattern as compiled; owned by g. */
const char *glob_pattern(const struct glob *g);

/* The number of components; glob_overlap costs about the product of two
 * globs' counts (plus one each). */
size_t glob_components(const struct glob *g);

/* Whether the absolute path matches. Empty components of path ("//", a
 * trailing '/') are ignored; a relative path, or one longer than PATH_MAX,
 * matches nothing. Runs in O(len(pattern) * len(path)). */
bool glob_match(const struct glob *g, const char *path);

/* Whether some path matches both globs. The check is exact, not a guess:
 * two components overlap when they are equal literals, a literal matches the
 * other's pattern, or (both with '*') their literal prefixes before the first
 * '*' agree and their suffixes after the last '*' agree, since then
 * prefix + the middles of both + suffix matches both; "**" is handled by a
 * reachability walk over pairs of positions in the two patterns. When they
 * overlap and witness is not NULL, it receives a glob describing paths
 * matched by both (for "/x" + "/" + "**" and "/x/y/a.bin": "/x/y/a.bin"),
 * truncated to wlen. */
bool glob_overlap(const struct glob *a, const struct glob *b, char *witness, size_t wlen);

#endif
