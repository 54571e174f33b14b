#include "paths.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int paths_mkdirs(const char *dir)
{
	char buf[4096];
	if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *s = buf + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int fail(char **ret_err, int code, const char *path, const char *why)
{
	if (ret_err != NULL && asprintf(ret_err, "%s: %s", path, why) < 0)
		*ret_err = NULL;
	return code;
}

int paths_read_file(const char *path, size_t max, char **ret_buf, size_t *ret_len, mode_t *ret_mode,
                    char **ret_err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return fail(ret_err, -errno, path, strerror(errno));
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int r;
	if (fstat(fd, &st) < 0) {
		r = fail(ret_err, -errno, path, strerror(errno));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		r = fail(ret_err, -EISDIR, path, strerror(EISDIR));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = fail(ret_err, -EINVAL, path, "not a regular file");
		goto out;
	}
	/* One byte past the limit tells "too large" from "exactly the limit";
	 * the file may grow after fstat, so st_size is not trusted. */
	buf = malloc(max + 1);
	if (buf == NULL) {
		r = fail(ret_err, -ENOMEM, path, "out of memory");
		goto out;
	}
	while (len < max + 1) {
		ssize_t n = read(fd, buf + len, max + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = fail(ret_err, -errno, path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > max) {
		char why[64];
		snprintf(why, sizeof(why), "larger than %zu bytes", max);
		r = fail(ret_err, -EFBIG, path, why);
		goto out;
	}
	*ret_buf = buf;
	*ret_len = len;
	if (ret_mode != NULL)
		*ret_mode = st.st_mode;
	buf = NULL;
	r = 0;
out:
	free(buf);
	close(fd);
	return r;
}
