/* The control language of mp-wanrelay: one command a line, on its control
 * socket or from `mp-wanrelay ctl`.
 *
 *   delay MS      one-way delay added to every byte (0..60000)
 *   jitter MS     plus a uniform 0..MS more per chunk, order kept (0..60000)
 *   rate BPS      bytes per second each way, 0 for no limit (0 or 128..10^10);
 *                 a suffix k, m or g (x1000) or kbit/mbit/gbit (bits) is taken
 *   stall MS      hold every byte of every connection this long (0..600000)
 *   reset         close every connection at once with a TCP RST
 *   stats         one line of counters
 *
 * Words are separated by spaces or tabs; a trailing "\r" or "\n" is taken. */
#ifndef WANRELAY_CTL_H
#define WANRELAY_CTL_H

#include <stddef.h>
#include <stdint.h>

#define WANRELAY_CTL_LINE_MAX 256

enum wanrelay_cmd_kind {
	WANRELAY_DELAY = 1,
	WANRELAY_JITTER,
	WANRELAY_RATE,
	WANRELAY_STALL,
	WANRELAY_RESET,
	WANRELAY_STATS,
};

struct wanrelay_cmd {
	enum wanrelay_cmd_kind kind;
	uint64_t value; /* milliseconds, or bytes per second for rate */
};

/* Parses one line of len bytes (not NUL-terminated). Returns 0 and fills
 * *ret, or -EINVAL with a message naming what was wrong in err (always
 * NUL-terminated, errlen > 0). */
int wanrelay_ctl_parse(const char *line, size_t len, struct wanrelay_cmd *ret, char *err,
                       size_t errlen);

#endif
