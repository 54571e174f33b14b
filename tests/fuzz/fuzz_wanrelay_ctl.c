/* Fuzz target for mp-wanrelay's control commands (tests/tools/wanrelay_ctl.c).
 * The input is one line. What parses must be a known command with its value
 * in the command's bounds; what does not must say why in a clean message;
 * a parsed command printed back must parse to the same command. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wanrelay_ctl.h"

#define FUZZ_LINE_MAX 4096

static const char *const names[] = {NULL, "delay", "jitter", "rate", "stall", "reset", "stats"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wanrelay_cmd cmd, again;
	char err[96];
	memset(err, 'x', sizeof(err));
	int r = wanrelay_ctl_parse((const char *)data, size, &cmd, err, sizeof(err));
	if (r != 0) {
		size_t n = strnlen(err, sizeof(err));
		if (r != -EINVAL || n == 0 || n == sizeof(err))
			abort();
		return 0;
	}
	switch (cmd.kind) {
	case WANRELAY_DELAY:
	case WANRELAY_JITTER:
		if (cmd.value > 60000)
			abort();
		break;
	case WANRELAY_STALL:
		if (cmd.value > 600000)
			abort();
		break;
	case WANRELAY_RATE:
		if (cmd.value > 10000000000ull || (cmd.value != 0 && cmd.value < 128))
			abort();
		break;
	case WANRELAY_RESET:
	case WANRELAY_STATS:
		if (cmd.value != 0)
			abort();
		break;
	default:
		abort();
	}
	char line[64];
	int n = cmd.kind == WANRELAY_RESET || cmd.kind == WANRELAY_STATS
	            ? snprintf(line, sizeof(line), "%s\n", names[cmd.kind])
	            : snprintf(line, sizeof(line), "%s %" PRIu64 "\n", names[cmd.kind], cmd.value);
	if (wanrelay_ctl_parse(line, (size_t)n, &again, err, sizeof(err)) != 0 ||
	    again.kind != cmd.kind || again.value != cmd.value)
		abort();
	return 0;
}
