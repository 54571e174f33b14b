#include "token.h"

#include "paths.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define MAC_LEN     32
#define MAC_B64_LEN 43
/* The longest version 1 payload: "1 client NAME rw ISSUED EXPIRES SUBTREE". */
#define PAYLOAD_MAX (2 + 7 + TOKEN_NAME_MAX + 1 + 3 + 20 + 20 + TOKEN_PATH_MAX + 1)
/* A secret file may carry whitespace around the secret; bound what is read. */
#define SECRET_FILE_MAX 65536

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void set_reason(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_reason(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static size_t b64_encoded_len(size_t n)
{
	return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

/* Writes b64_encoded_len(n) characters and a NUL. */
static void b64_encode(const uint8_t *in, size_t n, char *out)
{
	size_t i = 0, o = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64url[v >> 18];
		out[o++] = b64url[(v >> 12) & 63];
		out[o++] = b64url[(v >> 6) & 63];
		out[o++] = b64url[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = b64url[v >> 18];
		out[o++] = b64url[(v >> 12) & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = b64url[v >> 18];
		out[o++] = b64url[(v >> 12) & 63];
		out[o++] = b64url[(v >> 6) & 63];
	}
	out[o] = '\0';
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Decodes exactly the canonical unpadded encoding: any other character, a
 * length that no byte count encodes to, or non-zero unused bits in the last
 * character is refused, so no two strings decode to the same bytes. Returns
 * the decoded length, or -EINVAL (also when it would exceed outlen). */
static ssize_t b64_decode(const char *in, size_t n, uint8_t *out, size_t outlen)
{
	size_t o = 0, rem = n % 4;
	uint32_t acc = 0;

	if (rem == 1 || n / 4 * 3 + (rem ? rem - 1 : 0) > outlen)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int v = b64_value(in[i]);
		if (v < 0)
			return -EINVAL;
		acc = acc << 6 | (uint32_t)v;
		if (i % 4 == 3) {
			out[o++] = (uint8_t)(acc >> 16);
			out[o++] = (uint8_t)(acc >> 8);
			out[o++] = (uint8_t)acc;
			acc = 0;
		}
	}
	if (rem == 2) {
		if (acc & 0x0f)
			return -EINVAL;
		out[o++] = (uint8_t)(acc >> 4);
	} else if (rem == 3) {
		if (acc & 0x03)
			return -EINVAL;
		out[o++] = (uint8_t)(acc >> 10);
		out[o++] = (uint8_t)(acc >> 2);
	}
	return (ssize_t)o;
}

static bool name_valid(const char *s, size_t len)
{
	if (len == 0 || len > TOKEN_NAME_MAX)
		return false;
	/* Names end up in paths and logs; keep "." and ".." out of both. */
	if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

bool token_path_valid(const char *path, size_t len)
{
	size_t start = 1;

	if (!path || len == 0 || len > TOKEN_PATH_MAX || path[0] != '/')
		return false;
	if (len == 1)
		return true;
	while (start <= len) {
		const char *slash = memchr(path + start, '/', len - start);
		size_t end = slash ? (size_t)(slash - path) : len;
		size_t clen = end - start;
		const char *c = path + start;

		if (clen == 0 || clen > 255 || memchr(c, '\0', clen))
			return false;
		if ((clen == 1 && c[0] == '.') || (clen == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		start = end + 1;
	}
	return true;
}

const char *token_kind_name(enum token_kind kind)
{
	switch (kind) {
	case TOKEN_SITE:
		return "site";
	case TOKEN_CLIENT:
		return "client";
	}
	return "unknown";
}

static bool claims_valid(const struct token_claims *c)
{
	size_t nlen = strnlen(c->name, sizeof(c->name));
	size_t slen = strnlen(c->subtree, sizeof(c->subtree));

	if (c->kind != TOKEN_SITE && c->kind != TOKEN_CLIENT)
		return false;
	if (nlen == sizeof(c->name) || !name_valid(c->name, nlen))
		return false;
	if (slen == sizeof(c->subtree) || !token_path_valid(c->subtree, slen))
		return false;
	/* A site token is for the whole change stream and grants no writes. */
	if (c->kind == TOKEN_SITE && (strcmp(c->subtree, "/") != 0 || c->read_write))
		return false;
	if (c->issued < 0 || c->expires < 0 || (c->expires != 0 && c->expires <= c->issued))
		return false;
	return true;
}

static bool secret_ok(const uint8_t *secret, size_t len)
{
	return secret && len >= TOKEN_SECRET_MIN && len <= TOKEN_SECRET_MAX;
}

static int mac(const uint8_t *secret, size_t secret_len, const void *data, size_t len,
               uint8_t out[MAC_LEN])
{
	unsigned int outlen = 0;

	if (!HMAC(EVP_sha256(), secret, (int)secret_len, data, len, out, &outlen) ||
	    outlen != MAC_LEN)
		return -EIO;
	return 0;
}

int token_create(const uint8_t *secret, size_t secret_len, const struct token_claims *claims,
                 char **ret_token)
{
	char payload[PAYLOAD_MAX + 1];
	uint8_t digest[MAC_LEN];
	size_t plen, signed_len, total;
	char *token;
	int n, r;

	if (!secret_ok(secret, secret_len) || !claims || !ret_token || !claims_valid(claims))
		return -EINVAL;
	n = snprintf(payload, sizeof(payload), "1 %s %s %s %" PRId64 " %" PRId64 " %s",
	             token_kind_name(claims->kind), claims->name, claims->read_write ? "rw" : "ro",
	             claims->issued, claims->expires, claims->subtree);
	if (n < 0 || (size_t)n >= sizeof(payload))
		return -EINVAL;
	plen = (size_t)n;
	signed_len = strlen(TOKEN_PREFIX) + b64_encoded_len(plen);
	total = signed_len + 1 + MAC_B64_LEN;
	token = malloc(total + 1);
	if (!token)
		return -ENOMEM;
	memcpy(token, TOKEN_PREFIX, strlen(TOKEN_PREFIX));
	b64_encode((const uint8_t *)payload, plen, token + strlen(TOKEN_PREFIX));
	r = mac(secret, secret_len, token, signed_len, digest);
	if (r < 0) {
		free(token);
		return r;
	}
	token[signed_len] = '.';
	b64_encode(digest, MAC_LEN, token + signed_len + 1);
	OPENSSL_cleanse(digest, sizeof(digest));
	*ret_token = token;
	return 0;
}

/* The next space-separated field of [*p, end). */
static bool next_field(const char **p, const char *end, const char **ret, size_t *ret_len)
{
	const char *sp = memchr(*p, ' ', (size_t)(end - *p));

	if (!sp)
		return false;
	*ret = *p;
	*ret_len = (size_t)(sp - *p);
	*p = sp + 1;
	return true;
}

static bool field_is(const char *f, size_t len, const char *word)
{
	return strlen(word) == len && memcmp(f, word, len) == 0;
}

/* Non-negative decimal without leading zeros, at most INT64_MAX. */
static bool parse_i64(const char *f, size_t len, int64_t *ret)
{
	int64_t v = 0;

	if (len == 0 || len > 19 || (len > 1 && f[0] == '0'))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (f[i] < '0' || f[i] > '9')
			return false;
		if (v > (INT64_MAX - (f[i] - '0')) / 10)
			return false;
		v = v * 10 + (f[i] - '0');
	}
	*ret = v;
	return true;
}

static bool payload_parse(const char *p, size_t len, struct token_claims *ret)
{
	const char *end = p + len, *f;
	size_t flen;
	struct token_claims c;

	memset(&c, 0, sizeof(c));
	if (!next_field(&p, end, &f, &flen) || !field_is(f, flen, "1"))
		return false;
	if (!next_field(&p, end, &f, &flen))
		return false;
	if (field_is(f, flen, "site"))
		c.kind = TOKEN_SITE;
	else if (field_is(f, flen, "client"))
		c.kind = TOKEN_CLIENT;
	else
		return false;
	if (!next_field(&p, end, &f, &flen) || !name_valid(f, flen))
		return false;
	memcpy(c.name, f, flen);
	if (!next_field(&p, end, &f, &flen))
		return false;
	if (field_is(f, flen, "rw"))
		c.read_write = true;
	else if (!field_is(f, flen, "ro"))
		return false;
	if (!next_field(&p, end, &f, &flen) || !parse_i64(f, flen, &c.issued))
		return false;
	if (!next_field(&p, end, &f, &flen) || !parse_i64(f, flen, &c.expires))
		return false;
	flen = (size_t)(end - p);
	if (!token_path_valid(p, flen))
		return false;
	memcpy(c.subtree, p, flen);
	if (!claims_valid(&c))
		return false;
	*ret = c;
	return true;
}

static void format_time(int64_t t, char *out, size_t outlen)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, outlen, "@%" PRId64, t);
}

int token_verify(const uint8_t *secret, size_t secret_len, const char *token, size_t token_len,
                 int64_t now, struct token_claims *ret, char *err, size_t errlen)
{
	const size_t prefix_len = strlen(TOKEN_PREFIX);
	uint8_t payload[PAYLOAD_MAX], given[MAC_LEN], want[MAC_LEN];
	const char *body, *dot;
	size_t body_len, p64_len;
	ssize_t plen;
	struct token_claims c;
	char when[64];
	int r;

	if (!ret)
		return -EINVAL;
	if (!secret_ok(secret, secret_len)) {
		set_reason(err, errlen, "the cluster secret must be %d to %d bytes",
		           TOKEN_SECRET_MIN, TOKEN_SECRET_MAX);
		return -EINVAL;
	}
	if (!token || token_len == 0) {
		set_reason(err, errlen, "malformed token: empty");
		return -EINVAL;
	}
	if (token_len > TOKEN_MAX_LEN) {
		set_reason(err, errlen, "malformed token: longer than %d bytes", TOKEN_MAX_LEN);
		return -EINVAL;
	}
	if (token_len < prefix_len || memcmp(token, TOKEN_PREFIX, prefix_len) != 0) {
		/* "mpt2." and later: tell an old binary from a bad token */
		if (token_len >= 5 && memcmp(token, "mpt", 3) == 0 && token[3] >= '0' &&
		    token[3] <= '9' && token[4] == '.')
			set_reason(err, errlen, "malformed token: unsupported version");
		else
			set_reason(err, errlen, "malformed token: not an mpt1 token");
		return -EINVAL;
	}
	body = token + prefix_len;
	body_len = token_len - prefix_len;
	dot = memchr(body, '.', body_len);
	if (!dot) {
		set_reason(err, errlen, "malformed token: no signature");
		return -EINVAL;
	}
	p64_len = (size_t)(dot - body);
	plen = b64_decode(body, p64_len, payload, sizeof(payload));
	if (plen <= 0) {
		set_reason(err, errlen, "malformed token: bad payload encoding");
		return -EINVAL;
	}
	if (body_len - p64_len - 1 != MAC_B64_LEN ||
	    b64_decode(dot + 1, MAC_B64_LEN, given, sizeof(given)) != MAC_LEN) {
		set_reason(err, errlen, "malformed token: bad signature encoding");
		return -EINVAL;
	}
	r = mac(secret, secret_len, token, prefix_len + p64_len, want);
	if (r < 0) {
		set_reason(err, errlen, "cannot compute HMAC-SHA256");
		return r;
	}
	/* Constant time, so that timing does not reveal how much of a forged
	 * MAC was right. */
	if (CRYPTO_memcmp(given, want, MAC_LEN) != 0) {
		set_reason(err, errlen, "bad signature (token made with another secret?)");
		return -EACCES;
	}
	if (!payload_parse((const char *)payload, (size_t)plen, &c)) {
		set_reason(err, errlen, "malformed token: bad payload");
		return -EINVAL;
	}
	if (c.expires != 0 && now >= c.expires) {
		format_time(c.expires, when, sizeof(when));
		set_reason(err, errlen, "%s token '%s' expired at %s", token_kind_name(c.kind),
		           c.name, when);
		return -EKEYEXPIRED;
	}
	*ret = c;
	return 0;
}

bool token_allows_path(const struct token_claims *c, const char *path, size_t len)
{
	size_t slen;

	if (!c || !path || !token_path_valid(path, len))
		return false;
	slen = strnlen(c->subtree, sizeof(c->subtree));
	/* An empty or odd subtree must not turn into a prefix of everything. */
	if (slen == sizeof(c->subtree) || !token_path_valid(c->subtree, slen))
		return false;
	if (slen == 1)
		return true;
	if (len < slen || memcmp(path, c->subtree, slen) != 0)
		return false;
	return len == slen || path[slen] == '/';
}

static bool is_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static void set_err(char **ret_err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(char **ret_err, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (!ret_err)
		return;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	*ret_err = s;
}

int token_load_secret(const char *path, uint8_t **ret_secret, size_t *ret_len, char **ret_err)
{
	char *raw = NULL;
	uint8_t *secret;
	size_t len = 0, start, end;
	mode_t mode;
	int r;

	if (!path || !ret_secret || !ret_len)
		return -EINVAL;
	r = paths_read_file(path, SECRET_FILE_MAX, &raw, &len, &mode, ret_err);
	if (r == -EFBIG) {
		if (ret_err != NULL)
			free(*ret_err);
		set_err(ret_err, "%s: the secret is longer than %d bytes", path, TOKEN_SECRET_MAX);
		return -EINVAL;
	}
	if (r == -EISDIR) {
		if (ret_err != NULL)
			free(*ret_err);
		set_err(ret_err, "%s: not a regular file", path);
		return -EINVAL;
	}
	if (r < 0)
		return r;
	const uint8_t *buf = (const uint8_t *)raw;
	if (mode & 077) {
		r = -EPERM;
		set_err(ret_err,
		        "%s: the secret is accessible by group or others (mode %04o); "
		        "run chmod 600 on it",
		        path, (unsigned)(mode & 07777));
		goto out;
	}
	for (start = 0; start < len && is_space(buf[start]); start++)
		;
	for (end = len; end > start && is_space(buf[end - 1]); end--)
		;
	if (end - start > TOKEN_SECRET_MAX) {
		r = -EINVAL;
		set_err(ret_err, "%s: the secret is longer than %d bytes", path, TOKEN_SECRET_MAX);
		goto out;
	}
	if (end - start < TOKEN_SECRET_MIN) {
		r = -EINVAL;
		set_err(ret_err, "%s: the secret is %zu bytes, at least %d are needed", path,
		        end - start, TOKEN_SECRET_MIN);
		goto out;
	}
	secret = malloc(end - start);
	if (!secret) {
		r = -ENOMEM;
		set_err(ret_err, "%s: out of memory", path);
		goto out;
	}
	memcpy(secret, buf + start, end - start);
	*ret_secret = secret;
	*ret_len = end - start;
	r = 0;
out:
	OPENSSL_cleanse(raw, len);
	free(raw);
	return r;
}

void token_free_secret(uint8_t *secret, size_t len)
{
	if (!secret)
		return;
	OPENSSL_cleanse(secret, len);
	free(secret);
}
