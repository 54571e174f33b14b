/* Read grants: proof, presented to a cache node, that the metadata service
 * let this client see a file whose layout names an object. Like a presigned
 * URL: HMAC-SHA256 with the cluster secret over (bucket alias, key, etag,
 * expiry), bound to that object and short-lived. Mirrors and the primary
 * attach one per extent to the nodes they answer with; cache nodes check
 * them. On the wire a grant is text: 16 hex digits of the expiry (unix
 * seconds), '.', 32 hex digits of the truncated MAC. */
#ifndef MP_GRANT_H
#define MP_GRANT_H

#include <stddef.h>
#include <stdint.h>

#define GRANT_LEN   49 /* characters, without the NUL */
#define GRANT_TTL_S 900

/* Writes the grant (NUL-terminated) for the object, valid until now + ttl. */
int grant_make(const uint8_t *secret, size_t secret_len, const char *bucket, const char *key,
               const char *etag, int64_t now, int64_t ttl_s, char out[GRANT_LEN + 1]);
/* 0 when grant (len bytes) is valid for the object at time now; else
 * -EACCES (missing, malformed, forged, for another object) or -EKEYEXPIRED,
 * with the reason in err. */
int grant_check(const uint8_t *secret, size_t secret_len, const char *bucket, const char *key,
                const char *etag, const char *grant, size_t len, int64_t now, char *err,
                size_t errlen);

#endif
