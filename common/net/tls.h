/* TLS for the change stream and the RPC port: OpenSSL 3 contexts and
 * libevent_openssl bufferevents on top of them.
 *
 * Between sites TLS is mutual: the server requires and verifies a client
 * certificate (verify_peer with ca_file), the client always verifies the
 * server, and each side names its peer with tls_peer_name. TLS 1.2 is the
 * oldest version spoken.
 *
 * An SSL_CTX belongs to the caller (SSL_CTX_free). Connections hold their
 * own reference, so a reload may swap in a new context and free the old one
 * while connections made with it are still open. */
#ifndef MP_TLS_H
#define MP_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/util.h>
#include <openssl/ssl.h>

struct bufferevent;
struct event_base;

struct tls_config {
	const char *cert_file; /* PEM, leaf first then intermediates */
	const char *key_file;  /* PEM, unencrypted */
	const char *ca_file;   /* PEM bundle of trusted CAs */
	/* Server: require a client certificate signed by ca_file. Ignored by
	 * clients, which always verify the server. */
	bool verify_peer;
};

/* cert_file and key_file are required; ca_file is required with
 * verify_peer. On failure returns NULL and sets *ret_err (when ret_err is
 * not NULL; the caller frees it) to a message naming the file and OpenSSL's
 * reason, e.g. "tls: cannot load certificate /x/cert.pem: No such file or
 * directory" or "tls: key /x/key.pem does not match certificate
 * /x/cert.pem". */
SSL_CTX *tls_server_ctx(const struct tls_config *c, char **ret_err);

/* The server's certificate is verified against ca_file, or against the
 * system's trust store when ca_file is NULL. server_name, when not NULL, is
 * the DNS name or IP address the certificate must match for connections
 * whose tls_connect names none. cert_file and key_file, optional but both
 * or neither, are presented to servers that ask (mutual TLS). Errors as for
 * tls_server_ctx. */
SSL_CTX *tls_client_ctx(const struct tls_config *c, const char *server_name, char **ret_err);

/* Wraps an accepted socket in a server-side TLS bufferevent
 * (BEV_OPT_CLOSE_ON_FREE): the handshake runs once the loop does, then
 * BEV_EVENT_CONNECTED is reported, or BEV_EVENT_ERROR if it fails. Takes
 * ownership of fd, which is closed on failure too. Returns NULL on failure. */
struct bufferevent *tls_accept(struct event_base *base, evutil_socket_t fd, SSL_CTX *ctx);

/* A client-side TLS bufferevent without a socket, ready for
 * bufferevent_socket_connect; BEV_EVENT_CONNECTED then means the handshake
 * succeeded and the server's certificate was verified. server_name (or the
 * context's, when NULL) is sent as SNI unless it is an IP address, and the
 * certificate must match it. Returns NULL on failure. */
struct bufferevent *tls_connect(struct event_base *base, SSL_CTX *ctx, const char *server_name);

/* A client SSL for a blocking or poll-driven socket of the caller's (the
 * client library): checks the server's certificate against server_name (or
 * the context's) and sends it as SNI unless it is an IP address. The caller
 * owns it (SSL_free). Returns NULL on failure. */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *server_name);

/* Copies into buf the common name, or failing that the first DNS
 * subjectAltName, of the peer's certificate, provided it was verified.
 * Returns 0, -ENOENT when there is no verified certificate or it has no
 * usable name (empty, embedded NUL or control characters), -ENOSPC when buf
 * is too small, -EINVAL when bev is not a TLS bufferevent. */
int tls_peer_name(struct bufferevent *bev, char *buf, size_t len);

/* The reason the connection failed, for logs: OpenSSL's latest error
 * recorded on bev, with the certificate verification result when that
 * failed, e.g. "certificate verify failed (unable to get local issuer
 * certificate)". Consumes the recorded errors. Returns buf. */
const char *tls_error(struct bufferevent *bev, char *buf, size_t len);

#endif
