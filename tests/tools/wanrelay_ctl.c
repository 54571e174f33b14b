/* Parser of mp-wanrelay's control commands (see wanrelay_ctl.h). */
#include "wanrelay_ctl.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define WORDS_MAX 3
#define WORD_MAX  32

static const struct {
	const char *name;
	enum wanrelay_cmd_kind kind;
	bool has_value;
	uint64_t min, max;
} commands[] = {
    {"delay", WANRELAY_DELAY, true, 0, 60000},        {"jitter", WANRELAY_JITTER, true, 0, 60000},
    {"rate", WANRELAY_RATE, true, 0, 10000000000ull}, {"stall", WANRELAY_STALL, true, 0, 600000},
    {"reset", WANRELAY_RESET, false, 0, 0},           {"stats", WANRELAY_STATS, false, 0, 0},
};

static const struct {
	const char *suffix;
	uint64_t mul, div; /* bytes per second = n * mul / div */
} rate_units[] = {
    {"", 1, 1},        {"k", 1000, 1},       {"m", 1000000, 1},       {"g", 1000000000, 1},
    {"kbit", 1000, 8}, {"mbit", 1000000, 8}, {"gbit", 1000000000, 8},
};

static int fail(char *err, size_t errlen, const char *fmt, const char *word)
{
	snprintf(err, errlen, fmt, word);
	return -EINVAL;
}

/* Splits into at most WORDS_MAX words of at most WORD_MAX - 1 bytes. */
static int split(const char *line, size_t len, char words[WORDS_MAX][WORD_MAX], int *ret_n,
                 char *err, size_t errlen)
{
	int n = 0;
	size_t i = 0;
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	while (i < len) {
		while (i < len && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == len)
			break;
		size_t start = i;
		while (i < len && line[i] != ' ' && line[i] != '\t') {
			unsigned char c = (unsigned char)line[i];
			if (c < 0x21 || c > 0x7e)
				return fail(err, errlen,
				            "%sa control character or a byte "
				            "outside ASCII in the command",
				            "");
			i++;
		}
		if (n == WORDS_MAX)
			return fail(err, errlen, "%stoo many words", "");
		if (i - start >= WORD_MAX)
			return fail(err, errlen, "%sa word is too long", "");
		memcpy(words[n], line + start, i - start);
		words[n][i - start] = '\0';
		n++;
	}
	*ret_n = n;
	return 0;
}

static int parse_number(const char *s, bool allow_units, uint64_t *ret)
{
	uint64_t v = 0;
	size_t i = 0;
	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	for (; s[i] >= '0' && s[i] <= '9'; i++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (!allow_units)
		return s[i] == '\0' ? (*ret = v, 0) : -EINVAL;
	for (size_t u = 0; u < sizeof(rate_units) / sizeof(rate_units[0]); u++) {
		if (strcmp(s + i, rate_units[u].suffix) != 0)
			continue;
		if (v > UINT64_MAX / rate_units[u].mul)
			return -ERANGE;
		*ret = v * rate_units[u].mul / rate_units[u].div;
		return 0;
	}
	return -EINVAL;
}

int wanrelay_ctl_parse(const char *line, size_t len, struct wanrelay_cmd *ret, char *err,
                       size_t errlen)
{
	char words[WORDS_MAX][WORD_MAX];
	int n;
	if (len > WANRELAY_CTL_LINE_MAX)
		return fail(err, errlen, "%sline longer than 256 bytes", "");
	if (split(line, len, words, &n, err, errlen) < 0)
		return -EINVAL;
	if (n == 0)
		return fail(err, errlen, "%sempty command", "");
	for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
		if (strcmp(words[0], commands[c].name) != 0)
			continue;
		if (!commands[c].has_value) {
			if (n != 1)
				return fail(err, errlen, "'%s' takes no argument", words[0]);
			ret->kind = commands[c].kind;
			ret->value = 0;
			return 0;
		}
		if (n != 2)
			return fail(err, errlen, "'%s' takes one number", words[0]);
		uint64_t v;
		if (parse_number(words[1], commands[c].kind == WANRELAY_RATE, &v) < 0 ||
		    v < commands[c].min || v > commands[c].max)
			return fail(err, errlen, "'%s': expected a number in range", words[1]);
		if (commands[c].kind == WANRELAY_RATE && v != 0 && v < 128)
			return fail(err, errlen, "rate '%s': at least 128 bytes/s (or 0)",
			            words[1]);
		ret->kind = commands[c].kind;
		ret->value = v;
		return 0;
	}
	return fail(err, errlen, "unknown command '%s' (delay, jitter, rate, stall, reset, stats)",
	            words[0]);
}
