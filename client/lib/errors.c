/* Errors handed to the library's callers: a negative errno and one line. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

int mperr(mp_error *err, int code, const char *fmt, ...)
{
	if (err == NULL)
		return code;
	va_list ap;
	va_start(ap, fmt);
	err->code = code;
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	/* One line: callers print it as is. */
	for (char *p = err->message; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	return code;
}

const char *mperr_name(int code)
{
	switch (code) {
	case -ENOENT:
		return "no such file or directory";
	case -EEXIST:
		return "already exists";
	case -ENOTDIR:
		return "not a directory";
	case -EISDIR:
		return "is a directory";
	case -ENOTEMPTY:
		return "directory not empty";
	case -EACCES:
		return "permission denied";
	case -EINVAL:
		return "invalid argument";
	case -ETIMEDOUT:
		return "timed out";
	case -ECONNREFUSED:
		return "connection refused";
	case -ESTALE:
		return "stale";
	case -EROFS:
		return "read-only";
	default: {
		static _Thread_local char buf[64];
		return strerror_r(-code, buf, sizeof(buf)); /* the GNU variant */
	}
	}
}
