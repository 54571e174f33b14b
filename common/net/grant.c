#include "grant.h"

#include <errno.h>
#include <stdbool.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

static int mac(const uint8_t *secret, size_t secret_len, const char *bucket, const char *key,
               const char *etag, uint64_t expiry, char out[33])
{
	char exp[17];
	snprintf(exp, sizeof(exp), "%016llx", (unsigned long long)expiry);
	/* Each field NUL-terminated, so no two objects sign alike. */
	const char *parts[] = {"mp-grant-v1", bucket, key, etag, exp};
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char buf[4096];
	size_t n = 0;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		size_t l = strlen(parts[i]) + 1;
		if (n + l > sizeof(buf))
			return -E2BIG;
		memcpy(buf + n, parts[i], l);
		n += l;
	}
	if (HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)buf, n, md,
	         &mdlen) == NULL)
		return -EIO;
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

int grant_make(const uint8_t *secret, size_t secret_len, const char *bucket, const char *key,
               const char *etag, int64_t now, int64_t ttl_s, char out[GRANT_LEN + 1])
{
	uint64_t expiry = (uint64_t)(now + ttl_s);
	char m[33];
	int r = mac(secret, secret_len, bucket, key, etag, expiry, m);
	if (r < 0)
		return r;
	snprintf(out, GRANT_LEN + 1, "%016llx.%s", (unsigned long long)expiry, m);
	return 0;
}

int grant_check(const uint8_t *secret, size_t secret_len, const char *bucket, const char *key,
                const char *etag, const char *grant, size_t len, int64_t now, char *err,
                size_t errlen)
{
	if (grant == NULL || len == 0) {
		snprintf(err, errlen,
		         "no read grant: read the file's metadata from a mirror or the "
		         "primary first (they sign one per extent)");
		return -EACCES;
	}
	unsigned long long expiry = 0;
	bool ok = len == GRANT_LEN && grant[16] == '.';
	for (size_t i = 0; ok && i < GRANT_LEN; i++) {
		char ch = grant[i];
		if (i == 16)
			continue;
		ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
		if (ok && i < 16)
			expiry = expiry << 4 | (unsigned)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
	}
	if (!ok) {
		snprintf(err, errlen, "malformed read grant (want %d characters: expiry.mac)",
		         GRANT_LEN);
		return -EACCES;
	}
	char m[33];
	if (mac(secret, secret_len, bucket, key, etag, expiry, m) < 0) {
		snprintf(err, errlen, "cannot check the read grant (OpenSSL failed)");
		return -EACCES;
	}
	if (CRYPTO_memcmp(m, grant + 17, 32) != 0) {
		snprintf(err, errlen,
		         "read grant does not match %s/%s (etag %s): forged, or for another object",
		         bucket, key, etag);
		return -EACCES;
	}
	if ((long long)expiry < (long long)now) {
		snprintf(err, errlen,
		         "read grant for %s/%s expired %lld s ago: read the metadata again", bucket,
		         key, (long long)now - (long long)expiry);
		return -EKEYEXPIRED;
	}
	return 0;
}
