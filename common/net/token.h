/* Access tokens: claims signed with HMAC-SHA256 under a cluster secret that
 * the primary and the mirrors share. Site tokens let a mirror subscribe to the
 * change stream; client tokens grant a subtree, read-only or read-write, until
 * they expire.
 *
 * A token is ASCII:
 *   "mpt1." base64url(payload) "." base64url(HMAC-SHA256(secret, "mpt1." base64url(payload)))
 * base64url without padding (RFC 4648 section 5), encoded canonically (unused
 * bits zero) and decoded strictly. The MAC covers the version prefix, so a
 * token cannot be replayed as another version.
 *
 * The payload (version 1) is one line of text, fields separated by one space,
 * the subtree last so that it may contain spaces:
 *   "1 KIND NAME ACCESS ISSUED EXPIRES SUBTREE"
 *   KIND    "site" or "client"
 *   NAME    1..64 of [A-Za-z0-9._-]
 *   ACCESS  "ro" or "rw"
 *   ISSUED  unix seconds, decimal without leading zeros
 *   EXPIRES unix seconds, 0 for never, after ISSUED otherwise
 *   SUBTREE an absolute normalised path (see token_path_valid); "/" for sites
 * e.g. "1 client alice ro 1767225600 1767830400 /datasets/imagenet".
 * It is parsed only after the MAC matched, and as strictly as it was written:
 * there is exactly one encoding of a set of claims. */
#ifndef MP_TOKEN_H
#define MP_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOKEN_PREFIX     "mpt1."
#define TOKEN_MAX_LEN    8192
#define TOKEN_NAME_MAX   64
#define TOKEN_PATH_MAX   4096
#define TOKEN_SECRET_MIN 16
#define TOKEN_SECRET_MAX 4096

enum token_kind { TOKEN_SITE = 1, TOKEN_CLIENT = 2 };

struct token_claims {
	enum token_kind kind;
	char name[TOKEN_NAME_MAX + 1];    /* 1..64 chars [A-Za-z0-9._-] */
	char subtree[TOKEN_PATH_MAX + 1]; /* absolute normalised path; "/" for site tokens */
	bool read_write;                  /* false for site tokens */
	int64_t expires;                  /* unix seconds; 0 = never */
	int64_t issued;                   /* unix seconds */
};

/* Makes a token for claims, which must be valid (name, subtree, expires 0 or
 * after issued, issued >= 0; a site token has subtree "/" and is read-only).
 * *ret_token is malloc'd, NUL-terminated; the caller frees it. Returns 0,
 * -EINVAL for bad claims or a secret shorter than TOKEN_SECRET_MIN, -ENOMEM,
 * or -EIO when OpenSSL fails. */
int token_create(const uint8_t *secret, size_t secret_len, const struct token_claims *claims,
                 char **ret_token);

/* Checks token (token_len bytes, need not be NUL-terminated) against secret
 * at time now (unix seconds). On success fills *ret and returns 0. Otherwise
 * writes a reason for a log line or a reply into err (when errlen > 0), and
 * returns:
 *   -EINVAL      malformed: empty, too long, bad prefix, bad base64, bad payload
 *   -EACCES      bad signature (made with another secret, or altered)
 *   -EKEYEXPIRED expired: the reason names the kind, the name and the time
 *   -EIO         OpenSSL failed
 * Checking the kind and access against what the request needs is the
 * caller's job; token_kind_name helps word it. */
int token_verify(const uint8_t *secret, size_t secret_len, const char *token, size_t token_len,
                 int64_t now, struct token_claims *ret, char *err, size_t errlen);

/* Whether c grants path (len bytes): path is the subtree or below it ("/a"
 * grants "/a" and "/a/b", not "/ab"; "/" grants every path). A path that is
 * not absolute and normalised (token_path_valid) is refused rather than
 * interpreted, so "/a/../b" never passes as being under "/a". */
bool token_allows_path(const struct token_claims *c, const char *path, size_t len);

/* Whether path (len bytes) is absolute and normalised: starts with '/', no
 * empty, "." or ".." components, no trailing '/' (except "/" itself), no NUL,
 * components of at most 255 bytes, at most TOKEN_PATH_MAX bytes in all. */
bool token_path_valid(const char *path, size_t len);

/* "site" or "client" ("unknown" otherwise). */
const char *token_kind_name(enum token_kind kind);

/* Reads the cluster secret from a file: the bytes after trimming leading and
 * trailing whitespace, TOKEN_SECRET_MIN..TOKEN_SECRET_MAX of them. Refuses a
 * file that group or others may access (like ssh with private keys) or that
 * is not a regular file. *ret_secret is malloc'd; free it with
 * token_free_secret. Errors as a malloc'd "PATH: reason" through ret_err (may
 * be NULL), written only on failure. Returns 0, -EPERM for a too-open file,
 * -EINVAL for a bad secret, or the negative errno of reading it. */
int token_load_secret(const char *path, uint8_t **ret_secret, size_t *ret_len, char **ret_err);

/* Wipes and frees a secret. NULL-safe. */
void token_free_secret(uint8_t *secret, size_t len);

#endif
