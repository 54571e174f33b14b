/* File-system paths the daemons create. */
#ifndef MP_PATHS_H
#define MP_PATHS_H

/* mkdir -p with mode 0700 for what it creates. Returns 0 or -errno. */
int paths_mkdirs(const char *dir);

#include <stddef.h>
#include <sys/types.h>

/* Reads a regular file of at most max bytes into a malloc'd buffer (one
 * spare byte, not NUL-terminated). Opened non-blocking, so a FIFO cannot
 * hang the caller. Returns 0, -EFBIG when larger than max, or -errno;
 * ret_err (malloc'd) names the path and the reason. ret_mode, if given,
 * gets the file's mode. */
int paths_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len, mode_t *ret_mode,
                    char **ret_err);

#endif
