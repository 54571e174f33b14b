/* Access tokens: the format checked against an independent encoder (OpenSSL's
 * base64 and HMAC), round trips, every way a token can be wrong, subtree
 * checks, and secret files. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "token.h"

static const uint8_t secret[] = "0123456789abcdef-cluster-secret";
#define SECRET_LEN (sizeof(secret) - 1)
static const uint8_t other[] = "fedcba9876543210-cluster-secret";

/* base64url without padding, by way of OpenSSL's standard base64. */
static char *b64url(const void *data, size_t len)
{
	char *out = malloc(len / 3 * 4 + 8);
	int n;

	assert_non_null(out);
	n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (int i = 0; i < n; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
	return out;
}

/* A token for an arbitrary payload, signed as the format says. */
static char *sign_payload(const uint8_t *key, size_t keylen, const char *payload)
{
	char *p64 = b64url(payload, strlen(payload)), *signed_part, *m64, *token;
	uint8_t mac[32];
	unsigned maclen = 0;

	assert_true(asprintf(&signed_part, "mpt1.%s", p64) > 0);
	assert_non_null(HMAC(EVP_sha256(), key, (int)keylen, (const uint8_t *)signed_part,
	                     strlen(signed_part), mac, &maclen));
	assert_int_equal(maclen, 32);
	m64 = b64url(mac, 32);
	assert_true(asprintf(&token, "%s.%s", signed_part, m64) > 0);
	free(p64);
	free(signed_part);
	free(m64);
	return token;
}

static struct token_claims site_claims(void)
{
	struct token_claims c;
	memset(&c, 0, sizeof(c));
	c.kind = TOKEN_SITE;
	strcpy(c.name, "eu-west-1");
	strcpy(c.subtree, "/");
	c.issued = 1767225600;
	return c;
}

static struct token_claims client_claims(void)
{
	struct token_claims c;
	memset(&c, 0, sizeof(c));
	c.kind = TOKEN_CLIENT;
	strcpy(c.name, "alice");
	strcpy(c.subtree, "/datasets/imagenet");
	c.read_write = true;
	c.issued = 1767225600;  /* 2026-01-01T00:00:00Z */
	c.expires = 1767830400; /* 2026-01-08T00:00:00Z */
	return c;
}

static int verify(const char *token, int64_t now, struct token_claims *ret, char *err,
                  size_t errlen)
{
	return token_verify(secret, SECRET_LEN, token, strlen(token), now, ret, err, errlen);
}

static void expect_fail(const char *token, int want_r, const char *want_err)
{
	struct token_claims out;
	char err[256] = "";

	memset(&out, 0x5a, sizeof(out));
	assert_int_equal(token_verify(secret, SECRET_LEN, token, strlen(token), 1767225601, &out,
	                              err, sizeof(err)),
	                 want_r);
	assert_string_equal(err, want_err);
	/* nothing written on failure */
	assert_int_equal(((unsigned char *)&out)[0], 0x5a);
	assert_int_equal(out.name[0], 0x5a);
}

static void test_format_matches_spec(void **state)
{
	struct token_claims c = client_claims();
	char *token = NULL, *want;

	assert_int_equal(token_create(secret, SECRET_LEN, &c, &token), 0);
	want = sign_payload(secret, SECRET_LEN,
	                    "1 client alice rw 1767225600 1767830400 /datasets/imagenet");
	assert_string_equal(token, want);
	free(want);
	free(token);

	c = site_claims();
	assert_int_equal(token_create(secret, SECRET_LEN, &c, &token), 0);
	want = sign_payload(secret, SECRET_LEN, "1 site eu-west-1 ro 1767225600 0 /");
	assert_string_equal(token, want);
	assert_int_equal(strncmp(token, "mpt1.", 5), 0);
	free(want);
	free(token);
}

static void test_round_trip(void **state)
{
	struct token_claims in = site_claims(), out;
	char *token = NULL, err[256] = "";

	assert_int_equal(token_create(secret, SECRET_LEN, &in, &token), 0);
	memset(&out, 0, sizeof(out));
	assert_int_equal(verify(token, INT64_MAX, &out, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(out.kind, TOKEN_SITE);
	assert_string_equal(out.name, "eu-west-1");
	assert_string_equal(out.subtree, "/");
	assert_false(out.read_write);
	assert_int_equal(out.expires, 0);
	assert_int_equal(out.issued, 1767225600);
	free(token);

	in = client_claims();
	assert_int_equal(token_create(secret, SECRET_LEN, &in, &token), 0);
	assert_int_equal(verify(token, in.expires - 1, &out, err, sizeof(err)), 0);
	assert_int_equal(out.kind, TOKEN_CLIENT);
	assert_string_equal(out.name, "alice");
	assert_string_equal(out.subtree, "/datasets/imagenet");
	assert_true(out.read_write);
	assert_int_equal(out.expires, 1767830400);
	assert_int_equal(out.issued, 1767225600);
	/* token_len bounds the token: trailing bytes are not part of it */
	{
		size_t len = strlen(token);
		char *longer = malloc(len + 4);
		memcpy(longer, token, len);
		memcpy(longer + len, "XYZ", 4);
		assert_int_equal(
		    token_verify(secret, SECRET_LEN, longer, len, in.issued, &out, NULL, 0), 0);
		assert_int_equal(token_verify(secret, SECRET_LEN, longer, len + 3, in.issued, &out,
		                              err, sizeof(err)),
		                 -EINVAL);
		assert_string_equal(err, "malformed token: bad signature encoding");
		free(longer);
	}
	free(token);

	/* names and subtrees at their limits */
	memset(in.name, 'n', TOKEN_NAME_MAX);
	in.name[TOKEN_NAME_MAX] = '\0';
	for (size_t i = 0; i < TOKEN_PATH_MAX; i += 16)
		memcpy(in.subtree + i, "/0123456789abcde", 16);
	in.subtree[TOKEN_PATH_MAX] = '\0';
	in.read_write = false;
	assert_int_equal(token_create(secret, SECRET_LEN, &in, &token), 0);
	assert_true(strlen(token) <= TOKEN_MAX_LEN);
	assert_int_equal(verify(token, in.issued, &out, err, sizeof(err)), 0);
	assert_memory_equal(out.subtree, in.subtree, TOKEN_PATH_MAX + 1);
	assert_memory_equal(out.name, in.name, TOKEN_NAME_MAX + 1);
	assert_false(out.read_write);
	free(token);
}

static void test_expiry(void **state)
{
	struct token_claims in = client_claims(), out;
	char *token = NULL, err[256] = "";

	assert_int_equal(token_create(secret, SECRET_LEN, &in, &token), 0);
	assert_int_equal(verify(token, 1767830399, &out, err, sizeof(err)), 0);
	assert_int_equal(verify(token, 1767830400, &out, err, sizeof(err)), -EKEYEXPIRED);
	assert_string_equal(err, "client token 'alice' expired at 2026-01-08T00:00:00Z");
	assert_int_equal(verify(token, 1900000000, &out, err, sizeof(err)), -EKEYEXPIRED);
	/* err may be NULL or tiny */
	assert_int_equal(verify(token, 1900000000, &out, NULL, 0), -EKEYEXPIRED);
	assert_int_equal(verify(token, 1900000000, &out, err, 7), -EKEYEXPIRED);
	assert_string_equal(err, "client");
	free(token);
}

static void test_tampering(void **state)
{
	struct token_claims in = client_claims(), out;
	char *token = NULL, *forged, *dot, err[256] = "";
	const char *mac;

	in.read_write = false;
	assert_int_equal(token_create(secret, SECRET_LEN, &in, &token), 0);

	/* the same MAC on a payload granting writes */
	forged = sign_payload(secret, SECRET_LEN,
	                      "1 client alice rw 1767225600 1767830400 /datasets/imagenet");
	mac = strrchr(token, '.');
	dot = strrchr(forged, '.');
	strcpy(dot, mac);
	expect_fail(forged, -EACCES, "bad signature (token made with another secret?)");
	free(forged);

	/* a changed payload character */
	forged = strdup(token);
	forged[5] = forged[5] == 'A' ? 'B' : 'A';
	expect_fail(forged, -EACCES, "bad signature (token made with another secret?)");
	free(forged);

	/* a changed MAC character */
	forged = strdup(token);
	dot = strrchr(forged, '.');
	dot[1] = dot[1] == 'A' ? 'B' : 'A';
	expect_fail(forged, -EACCES, "bad signature (token made with another secret?)");
	free(forged);

	/* another cluster's secret */
	assert_int_equal(token_verify(other, sizeof(other) - 1, token, strlen(token), in.issued,
	                              &out, err, sizeof(err)),
	                 -EACCES);
	assert_string_equal(err, "bad signature (token made with another secret?)");

	/* a secret that is a prefix of the real one */
	assert_int_equal(token_verify(secret, SECRET_LEN - 1, token, strlen(token), in.issued, &out,
	                              err, sizeof(err)),
	                 -EACCES);

	/* the right MAC over a different version prefix is refused before it */
	forged = strdup(token);
	forged[3] = '2';
	expect_fail(forged, -EINVAL, "malformed token: unsupported version");
	free(forged);
	free(token);
}

static void test_malformed(void **state)
{
	struct token_claims out;
	char err[256] = "", *big, *token = NULL, *t;
	struct token_claims in = site_claims();

	expect_fail("", -EINVAL, "malformed token: empty");
	assert_int_equal(token_verify(secret, SECRET_LEN, NULL, 0, 0, &out, err, sizeof(err)),
	                 -EINVAL);
	expect_fail("hello", -EINVAL, "malformed token: not an mpt1 token");
	expect_fail("mpt1", -EINVAL, "malformed token: not an mpt1 token");
	expect_fail("mpt9.abc.def", -EINVAL, "malformed token: unsupported version");
	expect_fail("MPT1.abc.def", -EINVAL, "malformed token: not an mpt1 token");
	expect_fail("mpt1.", -EINVAL, "malformed token: no signature");
	expect_fail("mpt1.abcd", -EINVAL, "malformed token: no signature");
	expect_fail("mpt1..abcd", -EINVAL, "malformed token: bad payload encoding");
	expect_fail("mpt1.!!!!.abcd", -EINVAL, "malformed token: bad payload encoding");
	expect_fail("mpt1.MQ==.abcd", -EINVAL, "malformed token: bad payload encoding");
	expect_fail("mpt1.MR.abcd", -EINVAL, "malformed token: bad payload encoding");
	expect_fail("mpt1.M.abcd", -EINVAL, "malformed token: bad payload encoding");
	expect_fail("mpt1.MQ.abcd", -EINVAL, "malformed token: bad signature encoding");

	assert_int_equal(token_create(secret, SECRET_LEN, &in, &token), 0);
	/* an extra part */
	assert_true(asprintf(&t, "%s.x", token) > 0);
	expect_fail(t, -EINVAL, "malformed token: bad signature encoding");
	free(t);
	/* standard base64 padding on the MAC */
	assert_true(asprintf(&t, "%s=", token) > 0);
	expect_fail(t, -EINVAL, "malformed token: bad signature encoding");
	free(t);
	/* the MAC's last character with non-zero unused bits: 43 characters
	 * carry 258 bits for 256, so the low 2 bits of the last must be zero */
	{
		static const char alphabet[] =
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		size_t last = strlen(token) - 1;
		size_t v = (size_t)(strchr(alphabet, token[last]) - alphabet);
		assert_int_equal(v & 3, 0);
		t = strdup(token);
		t[last] = alphabet[v + 1];
		expect_fail(t, -EINVAL, "malformed token: bad signature encoding");
		free(t);
	}
	/* a NUL inside */
	t = strdup(token);
	t[7] = '\0';
	assert_int_equal(
	    token_verify(secret, SECRET_LEN, t, strlen(token), 0, &out, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "malformed token: bad payload encoding");
	free(t);
	free(token);

	big = malloc(TOKEN_MAX_LEN + 2);
	memcpy(big, "mpt1.", 5);
	memset(big + 5, 'A', TOKEN_MAX_LEN - 4);
	big[TOKEN_MAX_LEN + 1] = '\0';
	expect_fail(big, -EINVAL, "malformed token: longer than 8192 bytes");
	free(big);

	/* short secret */
	assert_int_equal(token_verify(secret, 15, "mpt1.a.b", 8, 0, &out, err, sizeof(err)),
	                 -EINVAL);
	assert_string_equal(err, "the cluster secret must be 16 to 4096 bytes");
	assert_int_equal(token_verify(secret, SECRET_LEN, "mpt1.a.b", 8, 0, NULL, err, sizeof(err)),
	                 -EINVAL);
}

/* Payloads with a valid MAC that break the format: proof that the parser is
 * strict even when the signature is right. */
static void test_signed_but_bad_payload(void **state)
{
	static const char *const bad[] = {
	    "",
	    "1",
	    "2 site s ro 0 0 /",
	    "1 site s ro 0 0 /a",    /* site tokens cover "/" */
	    "1 site s rw 0 0 /",     /* and grant no writes */
	    "1 robot s ro 0 0 /",    /* unknown kind */
	    "1 client a/b ro 0 0 /", /* bad name */
	    "1 client .. ro 0 0 /",  /* bad name */
	    "1 client  ro 0 0 /",    /* empty name */
	    "1 client a RW 0 0 /",   /* access case */
	    "1 client a ro 01 0 /",  /* leading zero */
	    "1 client a ro -1 0 /",  /* negative */
	    "1 client a ro 1 1 /",   /* expires not after issued */
	    "1 client a ro 9223372036854775808 0 /",
	    "1 client a ro 0 0 ",        /* empty subtree */
	    "1 client a ro 0 0 a/b",     /* relative */
	    "1 client a ro 0 0 /a/",     /* trailing slash */
	    "1 client a ro 0 0 /a//b",   /* empty component */
	    "1 client a ro 0 0 /a/../b", /* dot-dot */
	    "1 client a ro 0 0 /./a",    /* dot */
	    "1  client a ro 0 0 /",      /* double space */
	    "1 client a ro 0 0",         /* missing subtree */
	};
	struct token_claims out;
	char *token;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char err[256] = "";
		token = sign_payload(secret, SECRET_LEN, bad[i]);
		int r = token_verify(secret, SECRET_LEN, token, strlen(token), 0, &out, err,
		                     sizeof(err));
		if (r != -EINVAL)
			fail_msg("payload '%s' gave %d", bad[i], r);
		if (bad[i][0])
			assert_string_equal(err, "malformed token: bad payload");
		free(token);
	}

	/* and a good one signed the same way, with spaces in the subtree */
	token =
	    sign_payload(secret, SECRET_LEN, "1 client bob ro 5 9223372036854775807 /my data/x y");
	assert_int_equal(token_verify(secret, SECRET_LEN, token, strlen(token), 6, &out, NULL, 0),
	                 0);
	assert_string_equal(out.subtree, "/my data/x y");
	assert_int_equal(out.expires, INT64_MAX);
	free(token);
}

static void test_create_refuses_bad_claims(void **state)
{
	struct token_claims c;
	char *token = (char *)"untouched";

#define REFUSE(mutation)                                                                           \
	do {                                                                                       \
		c = client_claims();                                                               \
		mutation;                                                                          \
		assert_int_equal(token_create(secret, SECRET_LEN, &c, &token), -EINVAL);           \
		assert_string_equal(token, "untouched");                                           \
	} while (0)

	REFUSE(c.kind = 0);
	REFUSE(c.kind = 3);
	REFUSE(c.name[0] = '\0');
	REFUSE(strcpy(c.name, "a b"));
	REFUSE(strcpy(c.name, "a/b"));
	REFUSE(strcpy(c.name, "."));
	REFUSE(memset(c.name, 'a', sizeof(c.name))); /* not terminated */
	REFUSE(strcpy(c.subtree, ""));
	REFUSE(strcpy(c.subtree, "data"));
	REFUSE(strcpy(c.subtree, "/data/"));
	REFUSE(strcpy(c.subtree, "/a//b"));
	REFUSE(strcpy(c.subtree, "/a/./b"));
	REFUSE(strcpy(c.subtree, "/a/.."));
	REFUSE(memset(c.subtree, '/', sizeof(c.subtree)));
	REFUSE(c.expires = c.issued);
	REFUSE(c.expires = -5);
	REFUSE(c.issued = -1);
	REFUSE((c.kind = TOKEN_SITE, c.read_write = false));   /* subtree not "/" */
	REFUSE((c.kind = TOKEN_SITE, strcpy(c.subtree, "/"))); /* read-write */
	c = client_claims();
	assert_int_equal(token_create(secret, 15, &c, &token), -EINVAL);
	assert_int_equal(token_create(NULL, 0, &c, &token), -EINVAL);
	assert_string_equal(token, "untouched");
#undef REFUSE
}

static void test_allows_path(void **state)
{
	struct token_claims c = client_claims();

#define ALLOWS(p) token_allows_path(&c, p, strlen(p))
	strcpy(c.subtree, "/a");
	assert_true(ALLOWS("/a"));
	assert_true(ALLOWS("/a/b"));
	assert_true(ALLOWS("/a/b/c"));
	assert_false(ALLOWS("/ab"));
	assert_false(ALLOWS("/"));
	assert_false(ALLOWS("/b"));
	assert_false(ALLOWS(""));
	assert_false(ALLOWS("a"));
	assert_false(ALLOWS("/a/"));
	assert_false(ALLOWS("/a//b"));
	assert_false(ALLOWS("/a/../b"));
	assert_false(ALLOWS("/a/./b"));
	assert_false(ALLOWS("/a/.."));
	/* len bounds the path */
	assert_true(token_allows_path(&c, "/a/bXYZ", 4));
	assert_false(token_allows_path(&c, "/abXYZ", 3));
	assert_false(token_allows_path(&c, "/a\0b", 4));
	assert_false(token_allows_path(NULL, "/a", 2));
	assert_false(token_allows_path(&c, NULL, 0));

	strcpy(c.subtree, "/datasets/imagenet");
	assert_true(ALLOWS("/datasets/imagenet/train/n01440764/x.JPEG"));
	assert_false(ALLOWS("/datasets/imagenet-21k"));
	assert_false(ALLOWS("/datasets"));

	strcpy(c.subtree, "/");
	assert_true(ALLOWS("/"));
	assert_true(ALLOWS("/anything/at/all"));
	assert_false(ALLOWS("relative"));
	assert_false(ALLOWS("/x/../y"));

	/* a subtree that is not a normalised path grants nothing */
	strcpy(c.subtree, "");
	assert_false(ALLOWS("/a"));
	strcpy(c.subtree, "/a/");
	assert_false(ALLOWS("/a/b"));
	memset(c.subtree, 'x', sizeof(c.subtree));
	assert_false(ALLOWS("/a"));
#undef ALLOWS

	assert_true(token_path_valid("/", 1));
	assert_true(token_path_valid("/...", 4));
	assert_true(token_path_valid("/a b/.c", 7));
	assert_false(token_path_valid("//", 2));
	{
		char p[300] = "/";
		memset(p + 1, 'c', 255);
		assert_true(token_path_valid(p, 256));
		p[256] = 'c';
		assert_false(token_path_valid(p, 257));
	}
	assert_int_equal(strcmp(token_kind_name(TOKEN_SITE), "site"), 0);
	assert_int_equal(strcmp(token_kind_name(TOKEN_CLIENT), "client"), 0);
	assert_int_equal(strcmp(token_kind_name(0), "unknown"), 0);
}

static char tmpdir[64];

static char *write_secret(const char *name, const char *data, size_t len, mode_t mode)
{
	char *path;
	FILE *f;

	assert_true(asprintf(&path, "%s/%s", tmpdir, name) > 0);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
	return path;
}

static void test_load_secret(void **state)
{
	uint8_t *s = NULL;
	size_t len = 0;
	char *err = NULL, *path, *want, *big;

	strcpy(tmpdir, "/tmp/mp-test-token-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));

	path = write_secret("ok", "  0123456789abcdef\n\n", 20, 0600);
	assert_int_equal(token_load_secret(path, &s, &len, &err), 0);
	assert_null(err);
	assert_int_equal(len, 16);
	assert_memory_equal(s, "0123456789abcdef", 16);
	token_free_secret(s, len);
	unlink(path);
	free(path);

	path = write_secret("open", "0123456789abcdef", 16, 0644);
	s = NULL;
	assert_int_equal(token_load_secret(path, &s, &len, &err), -EPERM);
	assert_null(s);
	assert_true(asprintf(&want,
	                     "%s: the secret is accessible by group or others (mode 0644); run "
	                     "chmod 600 on it",
	                     path) > 0);
	assert_string_equal(err, want);
	free(want);
	free(err);
	err = NULL;
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(token_load_secret(path, &s, &len, &err), -EPERM);
	free(err);
	err = NULL;
	assert_int_equal(chmod(path, 0400), 0);
	assert_int_equal(token_load_secret(path, &s, &len, &err), 0);
	token_free_secret(s, len);
	unlink(path);
	free(path);

	path = write_secret("short", "0123456789abcde \n", 17, 0600);
	assert_int_equal(token_load_secret(path, &s, &len, &err), -EINVAL);
	assert_true(asprintf(&want, "%s: the secret is 15 bytes, at least 16 are needed", path) >
	            0);
	assert_string_equal(err, want);
	free(want);
	free(err);
	err = NULL;
	unlink(path);
	free(path);

	big = malloc(TOKEN_SECRET_MAX + 1);
	memset(big, 'k', TOKEN_SECRET_MAX + 1);
	path = write_secret("long", big, TOKEN_SECRET_MAX + 1, 0600);
	assert_int_equal(token_load_secret(path, &s, &len, &err), -EINVAL);
	free(err);
	err = NULL;
	unlink(path);
	free(path);
	path = write_secret("max", big, TOKEN_SECRET_MAX, 0600);
	assert_int_equal(token_load_secret(path, &s, &len, &err), 0);
	assert_int_equal(len, TOKEN_SECRET_MAX);
	token_free_secret(s, len);
	unlink(path);
	free(path);
	free(big);

	assert_true(asprintf(&path, "%s/missing", tmpdir) > 0);
	assert_int_equal(token_load_secret(path, &s, &len, &err), -ENOENT);
	assert_true(asprintf(&want, "%s: No such file or directory", path) > 0);
	assert_string_equal(err, want);
	free(want);
	free(err);
	free(path);
	err = NULL;
	assert_int_equal(token_load_secret(tmpdir, &s, &len, &err), -EINVAL);
	free(err);

	token_free_secret(NULL, 0);
	assert_int_equal(rmdir(tmpdir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format_matches_spec),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_expiry),
	    cmocka_unit_test(test_tampering),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_signed_but_bad_payload),
	    cmocka_unit_test(test_create_refuses_bad_claims),
	    cmocka_unit_test(test_allows_path),
	    cmocka_unit_test(test_load_secret),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
