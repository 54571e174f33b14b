/* Cron schedules for warmup pipelines, in the syntax of Kubernetes CronJobs
 * (Vixie cron): five fields "MIN HOUR DOM MON DOW", each a list of
 * "*", "N", "N-M", "N-M/S" or "N/S" (N up to the field's maximum, every S;
 * "*" with "/S" is every S of the whole range), with month names jan..dec and day names sun..sat
 * (any case), DOW 7 also Sunday, or one of @yearly (@annually), @monthly, @weekly, @daily
 * (@midnight), @hourly. As in Vixie cron, when both DOM and DOW are
 * restricted (neither starts with '*') a day matches either of them.
 * Schedules are read in UTC, so that every site fires at the same moment. */
#ifndef MP_POLICY_CRON_H
#define MP_POLICY_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Longest schedule text accepted. */
#define CRON_MAX_LEN 256

struct cron {
	uint64_t minute; /* bit N: minute N, 0..59 */
	uint32_t hour;   /* 0..23 */
	uint32_t dom;    /* 1..31 */
	uint16_t month;  /* 1..12 */
	uint8_t dow;     /* 0..6, Sunday 0 */
	bool dom_star, dow_star;
};

/* Parses len bytes of text. On error writes what is wrong into err and
 * returns -EINVAL; ret is written only on success. */
int cron_parse(const char *text, size_t len, struct cron *ret, char *err, size_t errlen);

/* Whether the minute holding t matches. */
bool cron_matches(const struct cron *c, time_t t);

/* The first matching minute strictly after after, or -1 when there is none
 * within 8 years (e.g. "0 0 30 2 *"). */
time_t cron_next(const struct cron *c, time_t after);

#endif
