#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *proto_msg_name(unsigned type)
{
	switch (type) {
	case MT_HELLO:
		return "HELLO";
	case MT_HELLO_OK:
		return "HELLO_OK";
	case MT_ERROR:
		return "ERROR";
	case MT_REPLY:
		return "REPLY";
	case MT_VERSION:
		return "VERSION";
	case MT_LOOKUP:
		return "LOOKUP";
	case MT_GETATTR:
		return "GETATTR";
	case MT_RESOLVE:
		return "RESOLVE";
	case MT_READDIR:
		return "READDIR";
	case MT_POLICY_GET:
		return "POLICY_GET";
	case MT_REPLICATION_STATUS:
		return "REPLICATION_STATUS";
	case MT_SITES:
		return "SITES";
	case MT_SITE_REPORT:
		return "SITE_REPORT";
	case MT_POLICY_APPLY:
		return "POLICY_APPLY";
	case MT_GC_CONFIRM_SITES:
		return "GC_CONFIRM_SITES";
	case MT_MKDIR:
		return "MKDIR";
	case MT_CREATE:
		return "CREATE";
	case MT_SYMLINK:
		return "SYMLINK";
	case MT_RENAME:
		return "RENAME";
	case MT_UNLINK:
		return "UNLINK";
	case MT_RMDIR:
		return "RMDIR";
	case MT_SETATTR:
		return "SETATTR";
	case MT_BATCH:
		return "BATCH";
	case MT_SUBSCRIBE:
		return "SUBSCRIBE";
	case MT_CHANGES:
		return "CHANGES";
	case MT_HEARTBEAT:
		return "HEARTBEAT";
	case MT_ACK:
		return "ACK";
	case MT_SNAPSHOT_BEGIN:
		return "SNAPSHOT_BEGIN";
	case MT_SNAPSHOT_CHUNK:
		return "SNAPSHOT_CHUNK";
	case MT_SNAPSHOT_END:
		return "SNAPSHOT_END";
	case MT_BLOCK_READ:
		return "BLOCK_READ";
	case MT_CACHE_REGISTER:
		return "CACHE_REGISTER";
	case MT_CACHE_MEMBERS:
		return "CACHE_MEMBERS";
	case MT_CACHE_WARM:
		return "CACHE_WARM";
	case MT_CACHE_EVICT:
		return "CACHE_EVICT";
	case MT_CACHE_HAS:
		return "CACHE_HAS";
	case MT_WARMUP_START:
		return "WARMUP_START";
	case MT_WARMUP_STATUS:
		return "WARMUP_STATUS";
	case MT_GC:
		return "GC";
	default:
		return "UNKNOWN";
	}
}

const char *proto_errno_name(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case ENOENT:
		return "ENOENT";
	case EEXIST:
		return "EEXIST";
	case ENOTDIR:
		return "ENOTDIR";
	case EISDIR:
		return "EISDIR";
	case ENOTEMPTY:
		return "ENOTEMPTY";
	case EINVAL:
		return "EINVAL";
	case E2BIG:
		return "E2BIG";
	case EACCES:
		return "EACCES";
	case EPERM:
		return "EPERM";
	case EPROTO:
		return "EPROTO";
	case EBUSY:
		return "EBUSY";
	case ENAMETOOLONG:
		return "ENAMETOOLONG";
	case ESTALE:
		return "ESTALE";
	case EAGAIN:
		return "EAGAIN";
	case ENOMEM:
		return "ENOMEM";
	case ESHUTDOWN:
		return "ESHUTDOWN";
	case EROFS:
		return "EROFS";
	case ERANGE:
		return "ERANGE";
	case ETIMEDOUT:
		return "ETIMEDOUT";
	default:
		return "EIO";
	}
}

int proto_origin_check(const char *url, char *err, size_t errlen)
{
	size_t len = strlen(url);
	if (len > ORIGIN_MAX) {
		snprintf(err, errlen, "longer than %d bytes", ORIGIN_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)url[i] < 0x20 || url[i] == 0x7f) {
			snprintf(err, errlen, "control byte at offset %zu", i);
			return -EINVAL;
		}
	if (strncmp(url, "s3://", 5) == 0) {
		const char *bucket = url + 5;
		size_t blen = strcspn(bucket, "/");
		if (blen < 3 || blen > 63) {
			snprintf(err, errlen, "the bucket name must be 3 to 63 bytes (it is %zu)",
			         blen);
			return -EINVAL;
		}
		for (size_t i = 0; i < blen; i++) {
			char c = bucket[i];
			if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			      c == '.')) {
				snprintf(err, errlen,
				         "the bucket name may hold only a-z, 0-9, '-' and '.'");
				return -EINVAL;
			}
		}
		if (bucket[blen] == '/' && strlen(bucket + blen + 1) > 512) {
			snprintf(err, errlen, "the prefix must be at most 512 bytes");
			return -EINVAL;
		}
		return 0;
	}
	if (strncmp(url, "file://", 7) == 0) {
		if (url[7] != '/' || url[8] == '\0') {
			snprintf(err, errlen, "expected file:///DIR (an absolute directory)");
			return -EINVAL;
		}
		return 0;
	}
	snprintf(err, errlen, "expected s3://BUCKET[/PREFIX] or file:///DIR");
	return -EINVAL;
}
