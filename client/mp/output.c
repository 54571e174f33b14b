/* Formatting shared by the commands. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "output.h"

void output_size(uint64_t bytes, char *out, size_t len)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	if (bytes < 1024) {
		snprintf(out, len, "%" PRIu64 " B", bytes);
		return;
	}
	double v = (double)bytes / 1024.0;
	size_t u = 0;
	while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024.0;
		u++;
	}
	snprintf(out, len, v < 10.0 ? "%.2f %s" : v < 100.0 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

void output_mode(enum mp_type type, uint32_t mode, char *out, size_t len)
{
	char s[11];
	s[0] = type == MP_TYPE_DIR ? 'd' : type == MP_TYPE_SYMLINK ? 'l' : '-';
	static const char rwx[] = "rwxrwxrwx";
	for (int i = 0; i < 9; i++)
		s[1 + i] = (mode & (0400u >> i)) ? rwx[i] : '-';
	if (mode & 04000)
		s[3] = (mode & 0100) ? 's' : 'S';
	if (mode & 02000)
		s[6] = (mode & 0010) ? 's' : 'S';
	if (mode & 01000)
		s[9] = (mode & 0001) ? 't' : 'T';
	s[10] = '\0';
	snprintf(out, len, "%s", s);
}

static bool output_tm(int64_t ns, bool utc, struct tm *tm, long *ret_nsec)
{
	time_t t = (time_t)(ns / 1000000000);
	long nsec = (long)(ns % 1000000000);
	if (nsec < 0) {
		nsec += 1000000000;
		t--;
	}
	*ret_nsec = nsec;
	return (utc ? gmtime_r(&t, tm) : localtime_r(&t, tm)) != NULL;
}

void output_time_short(int64_t ns, char *out, size_t len)
{
	struct tm tm;
	long nsec;
	if (!output_tm(ns, false, &tm, &nsec) || strftime(out, len, "%Y-%m-%d %H:%M", &tm) == 0)
		snprintf(out, len, "?");
}

void output_time_long(int64_t ns, char *out, size_t len)
{
	struct tm tm;
	long nsec;
	char date[32], zone[16];
	if (!output_tm(ns, false, &tm, &nsec) ||
	    strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm) == 0 ||
	    strftime(zone, sizeof(zone), "%z", &tm) == 0) {
		snprintf(out, len, "?");
		return;
	}
	snprintf(out, len, "%s.%09ld %s", date, nsec, zone);
}

void output_time_rfc3339(int64_t ns, char *out, size_t len)
{
	struct tm tm;
	long nsec;
	char date[32];
	if (!output_tm(ns, true, &tm, &nsec) ||
	    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
		snprintf(out, len, "?");
		return;
	}
	snprintf(out, len, "%s.%09ldZ", date, nsec);
}

void output_duration_ms(uint64_t ms, char *out, size_t len)
{
	if (ms < 1000)
		snprintf(out, len, "%" PRIu64 "ms", ms);
	else if (ms < 60000)
		snprintf(out, len, "%.1fs", (double)ms / 1000.0);
	else if (ms < 3600000)
		snprintf(out, len, "%" PRIu64 "m%02" PRIu64 "s", ms / 60000, ms / 1000 % 60);
	else
		snprintf(out, len, "%" PRIu64 "h%02" PRIu64 "m", ms / 3600000, ms / 60000 % 60);
}

void output_name(FILE *f, const char *name, bool tty)
{
	if (!tty) {
		fputs(name, f);
		return;
	}
	for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++)
		fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, f);
}

void output_node_json(struct jsonw *w, const mp_node *n, const char *path, bool extents,
                      const mp_call *call)
{
	char buf[64];
	jsonw_object_begin(w);
	if (path != NULL)
		jsonw_field_string(w, "path", path);
	jsonw_field_string(w, "name", n->name != NULL ? n->name : "");
	jsonw_field_string(w, "type", mp_type_name(n->type));
	jsonw_field_uint(w, "ino", n->ino);
	jsonw_field_uint(w, "parent", n->parent);
	/* Octal, as people write modes; a string since JSON has no octal. */
	snprintf(buf, sizeof(buf), "%04o", (unsigned)n->mode);
	jsonw_field_string(w, "mode", buf);
	jsonw_field_uint(w, "uid", n->uid);
	jsonw_field_uint(w, "gid", n->gid);
	jsonw_field_uint(w, "size", n->size);
	jsonw_field_int(w, "mtime_ns", n->mtime_ns);
	output_time_rfc3339(n->mtime_ns, buf, sizeof(buf));
	jsonw_field_string(w, "mtime", buf);
	jsonw_field_int(w, "ctime_ns", n->ctime_ns);
	output_time_rfc3339(n->ctime_ns, buf, sizeof(buf));
	jsonw_field_string(w, "ctime", buf);
	if (n->type == MP_TYPE_SYMLINK)
		jsonw_field_string(w, "target", n->target);
	if (extents && n->type == MP_TYPE_FILE) {
		jsonw_key(w, "extents");
		jsonw_array_begin(w);
		for (size_t i = 0; i < n->n_extents; i++) {
			const mp_extent *e = &n->extents[i];
			jsonw_object_begin(w);
			jsonw_field_string(w, "bucket", e->bucket);
			jsonw_field_string(w, "key", e->key);
			jsonw_field_string(w, "etag", e->etag);
			jsonw_field_uint(w, "offset", e->offset);
			jsonw_field_uint(w, "length", e->length);
			jsonw_object_end(w);
		}
		jsonw_array_end(w);
	}
	if (call != NULL) {
		jsonw_field_uint(w, "version", call->version);
		jsonw_field_string(w, "served_by", call->served_by);
	}
	jsonw_object_end(w);
}
