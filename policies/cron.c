#include "cron.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct field {
	const char *name;
	unsigned min, max;
	const char *const *names; /* names[k] stands for min + k */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const struct field fields[5] = {
    {"minute", 0, 59, NULL},          {"hour", 0, 23, NULL},
    {"day of month", 1, 31, NULL},    {"month", 1, 12, month_names},
    {"day of week", 0, 7, day_names},
};

static const struct {
	const char *name, *expansion;
} shorthands[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

/* A number or (for fields with names) a name at *p. */
static int parse_value(const struct field *f, const char **p, const char *end, unsigned *ret,
                       char *err, size_t errlen)
{
	const char *s = *p;
	unsigned v = 0;

	if (s < end && s[0] >= '0' && s[0] <= '9') {
		while (s < end && *s >= '0' && *s <= '9') {
			v = v * 10 + (unsigned)(*s - '0');
			if (v > 1000) {
				snprintf(err, errlen, "%s: number too large", f->name);
				return -EINVAL;
			}
			s++;
		}
	} else if (f->names && end - s >= 3) {
		unsigned k;
		for (k = 0; f->names[k]; k++)
			if (strncasecmp(s, f->names[k], 3) == 0)
				break;
		if (!f->names[k]) {
			snprintf(err, errlen, "%s: unknown name '%.3s'", f->name, s);
			return -EINVAL;
		}
		v = f->min + k;
		s += 3;
	} else {
		snprintf(err, errlen, "%s: expected a number%s", f->name,
		         f->names ? " or a name" : "");
		return -EINVAL;
	}
	if (v < f->min || v > f->max) {
		snprintf(err, errlen, "%s: %u is out of range %u-%u", f->name, v, f->min, f->max);
		return -EINVAL;
	}
	*p = s;
	*ret = v;
	return 0;
}

/* One comma-separated item of a field into bits. */
static int parse_item(const struct field *f, const char *s, const char *end, uint64_t *bits,
                      char *err, size_t errlen)
{
	unsigned lo = f->min, hi = f->max, step = 1;
	int r;

	if (s < end && *s == '*') {
		s++;
	} else {
		r = parse_value(f, &s, end, &lo, err, errlen);
		if (r < 0)
			return r;
		hi = lo;
		if (s < end && *s == '-') {
			s++;
			r = parse_value(f, &s, end, &hi, err, errlen);
			if (r < 0)
				return r;
			if (hi < lo) {
				snprintf(err, errlen, "%s: range %u-%u runs backwards", f->name, lo,
				         hi);
				return -EINVAL;
			}
		} else if (s < end && *s == '/') {
			hi = f->max; /* "N/S": from N to the end */
		}
	}
	if (s < end && *s == '/') {
		const char *q = ++s;
		step = 0;
		while (s < end && *s >= '0' && *s <= '9' && step <= 1000)
			step = step * 10 + (unsigned)(*s++ - '0');
		if (s == q || step == 0 || step > f->max) {
			snprintf(err, errlen, "%s: step must be 1..%u", f->name, f->max);
			return -EINVAL;
		}
	}
	if (s != end) {
		snprintf(err, errlen, "%s: unexpected '%c'", f->name, *s);
		return -EINVAL;
	}
	for (unsigned v = lo; v <= hi; v += step)
		*bits |= (uint64_t)1 << v;
	return 0;
}

static int parse_field(const struct field *f, const char *s, const char *end, uint64_t *ret,
                       char *err, size_t errlen)
{
	uint64_t bits = 0;

	for (;;) {
		const char *comma = memchr(s, ',', (size_t)(end - s));
		const char *e = comma ? comma : end;
		int r;

		if (e == s) {
			snprintf(err, errlen, "%s: empty list item", f->name);
			return -EINVAL;
		}
		r = parse_item(f, s, e, &bits, err, errlen);
		if (r < 0)
			return r;
		if (!comma)
			break;
		s = comma + 1;
	}
	*ret = bits;
	return 0;
}

int cron_parse(const char *text, size_t len, struct cron *ret, char *err, size_t errlen)
{
	const char *s = text, *end = text + len;
	uint64_t bits[5];
	bool star[5];
	struct cron c;
	unsigned n = 0;

	if (len > CRON_MAX_LEN) {
		snprintf(err, errlen, "longer than %d bytes", CRON_MAX_LEN);
		return -EINVAL;
	}
	if (memchr(text, '\0', len)) {
		snprintf(err, errlen, "contains a NUL byte");
		return -EINVAL;
	}
	if (len > 0 && text[0] == '@') {
		for (size_t k = 0; k < sizeof(shorthands) / sizeof(shorthands[0]); k++)
			if (strlen(shorthands[k].name) == len &&
			    strncasecmp(text, shorthands[k].name, len) == 0)
				return cron_parse(shorthands[k].expansion,
				                  strlen(shorthands[k].expansion), ret, err,
				                  errlen);
		snprintf(err, errlen,
		         "unknown shorthand (expected @yearly, @annually, @monthly, @weekly, "
		         "@daily, @midnight or @hourly)");
		return -EINVAL;
	}
	for (;;) {
		const char *f;
		int r;

		while (s < end && (*s == ' ' || *s == '\t'))
			s++;
		if (s == end)
			break;
		f = s;
		while (s < end && *s != ' ' && *s != '\t')
			s++;
		if (n == 5) {
			snprintf(err, errlen, "more than 5 fields");
			return -EINVAL;
		}
		star[n] = *f == '*';
		r = parse_field(&fields[n], f, s, &bits[n], err, errlen);
		if (r < 0)
			return r;
		n++;
	}
	if (n < 5) {
		snprintf(err, errlen,
		         "expected 5 fields (minute hour day-of-month month day-of-week), got %u",
		         n);
		return -EINVAL;
	}
	memset(&c, 0, sizeof(c));
	c.minute = bits[0];
	c.hour = (uint32_t)bits[1];
	c.dom = (uint32_t)bits[2];
	c.month = (uint16_t)bits[3];
	/* 7 is Sunday too */
	c.dow = (uint8_t)((bits[4] | (bits[4] >> 7)) & 0x7f);
	c.dom_star = star[2];
	c.dow_star = star[4];
	*ret = c;
	return 0;
}

static bool day_matches(const struct cron *c, const struct tm *tm)
{
	bool dom = c->dom & ((uint32_t)1 << tm->tm_mday);
	bool dow = c->dow & (1u << tm->tm_wday);

	if (c->dom_star || c->dow_star)
		return dom && dow;
	return dom || dow;
}

bool cron_matches(const struct cron *c, time_t t)
{
	struct tm tm;

	if (!gmtime_r(&t, &tm))
		return false;
	return (c->month & (1u << (tm.tm_mon + 1))) && day_matches(c, &tm) &&
	       (c->hour & ((uint32_t)1 << tm.tm_hour)) && (c->minute & ((uint64_t)1 << tm.tm_min));
}

time_t cron_next(const struct cron *c, time_t after)
{
	struct tm tm;
	time_t t, limit;

	if (after < 0 || after > (time_t)1 << 40)
		return -1;
	t = after - after % 60 + 60;
	limit = t + (time_t)8 * 366 * 86400;
	/* Day by day (skipping whole months), then the hour and minute within
	 * a matching day: at most a few thousand steps. */
	while (t < limit) {
		int h, m;

		if (!gmtime_r(&t, &tm))
			return -1;
		if (!(c->month & (1u << (tm.tm_mon + 1)))) {
			tm.tm_mon++;
			tm.tm_mday = 1;
			tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
			t = timegm(&tm);
			continue;
		}
		if (!day_matches(c, &tm))
			goto next_day;
		for (h = tm.tm_hour; h < 24; h++) {
			if (!(c->hour & ((uint32_t)1 << h)))
				continue;
			for (m = h == tm.tm_hour ? tm.tm_min : 0; m < 60; m++)
				if (c->minute & ((uint64_t)1 << m))
					return t - (time_t)(tm.tm_hour * 3600 + tm.tm_min * 60) +
					       (time_t)(h * 3600 + m * 60);
		}
	next_day:
		tm.tm_mday++;
		tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
		t = timegm(&tm);
	}
	return -1;
}
