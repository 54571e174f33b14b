#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* Sessions resumed on a server that verifies clients must carry a context
 * id, or OpenSSL refuses the resumption. */
static const unsigned char tls_session_ctx[] = "mirrorplane";

/* OpenSSL's text for error e. System errors (a missing file) have no
 * reason string of their own: their reason is the errno. */
static const char *tls_reason_text(unsigned long e, char *buf, size_t len)
{
	if (ERR_SYSTEM_ERROR(e))
		return strerror(ERR_GET_REASON(e));
	const char *r = ERR_reason_error_string(e);
	if (r != NULL)
		return r;
	ERR_error_string_n(e, buf, len);
	return buf;
}

/* Sets *ret_err to "tls: <fmt>: <reason>", the reason being the earliest
 * error on the thread's OpenSSL queue (the root cause; later entries are
 * the callers' "PEM lib" and the like), and clears the queue so that it
 * cannot be blamed on the next connection. */
static void tls_fail(char **ret_err, bool with_reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void tls_fail(char **ret_err, bool with_reason, const char *fmt, ...)
{
	unsigned long e = ERR_peek_error();
	char what[512], rbuf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (ret_err != NULL) {
		int n;
		if (with_reason)
			n = asprintf(ret_err, "tls: %s: %s", what,
			             e != 0 ? tls_reason_text(e, rbuf, sizeof(rbuf))
			                    : "unknown error");
		else
			n = asprintf(ret_err, "tls: %s", what);
		if (n < 0)
			*ret_err = NULL;
	}
	ERR_clear_error();
}

/* Encrypted keys are refused rather than letting OpenSSL prompt on the
 * terminal of a daemon. */
static int tls_no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	return 0;
}

static SSL_CTX *tls_ctx_new(const SSL_METHOD *method, char **ret_err)
{
	SSL_CTX *ctx = SSL_CTX_new(method);
	if (ctx == NULL) {
		tls_fail(ret_err, true, "cannot create context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* libevent_openssl does not cope with renegotiation mid-stream. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_default_passwd_cb(ctx, tls_no_passphrase);
	SSL_CTX_set_session_id_context(ctx, tls_session_ctx, sizeof(tls_session_ctx) - 1);
	return ctx;
}

static int tls_load_identity(SSL_CTX *ctx, const char *cert_file, const char *key_file,
                             char **ret_err)
{
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		tls_fail(ret_err, true, "cannot load certificate %s", cert_file);
		return -EINVAL;
	}
	BIO *bio = BIO_new_file(key_file, "r");
	EVP_PKEY *key = NULL;
	if (bio != NULL)
		key = PEM_read_bio_PrivateKey(bio, NULL, tls_no_passphrase, NULL);
	BIO_free(bio);
	if (key == NULL) {
		tls_fail(ret_err, true, "cannot load key %s", key_file);
		return -EINVAL;
	}
	/* Checked here so that the message says which files disagree;
	 * SSL_CTX_use_PrivateKey would only say "key values mismatch". */
	if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), key) != 1) {
		EVP_PKEY_free(key);
		tls_fail(ret_err, false, "key %s does not match certificate %s", key_file,
		         cert_file);
		return -EINVAL;
	}
	int ok = SSL_CTX_use_PrivateKey(ctx, key);
	EVP_PKEY_free(key);
	if (ok != 1) {
		tls_fail(ret_err, true, "cannot use key %s", key_file);
		return -EINVAL;
	}
	return 0;
}

static int tls_load_ca(SSL_CTX *ctx, const char *ca_file, char **ret_err)
{
	if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		tls_fail(ret_err, true, "cannot load CA file %s", ca_file);
		return -EINVAL;
	}
	return 0;
}

static bool tls_is_ip(const char *name)
{
	unsigned char addr[16];
	return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

/* Makes param accept exactly name: a DNS name or an IP address. */
static int tls_expect_name(X509_VERIFY_PARAM *param, const char *name)
{
	X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (X509_VERIFY_PARAM_set1_host(param, NULL, 0) != 1 ||
	    X509_VERIFY_PARAM_set1_ip(param, NULL, 0) != 1)
		return -ENOMEM;
	if (tls_is_ip(name))
		return X509_VERIFY_PARAM_set1_ip_asc(param, name) == 1 ? 0 : -EINVAL;
	return X509_VERIFY_PARAM_set1_host(param, name, 0) == 1 ? 0 : -EINVAL;
}

SSL_CTX *tls_server_ctx(const struct tls_config *c, char **ret_err)
{
	if (c->cert_file == NULL || c->key_file == NULL) {
		tls_fail(ret_err, false, "a server needs cert_file and key_file");
		return NULL;
	}
	if (c->verify_peer && c->ca_file == NULL) {
		tls_fail(ret_err, false, "verify_peer needs ca_file");
		return NULL;
	}
	SSL_CTX *ctx = tls_ctx_new(TLS_server_method(), ret_err);
	if (ctx == NULL)
		return NULL;
	if (tls_load_identity(ctx, c->cert_file, c->key_file, ret_err) < 0)
		goto fail;
	if (c->verify_peer) {
		if (tls_load_ca(ctx, c->ca_file, ret_err) < 0)
			goto fail;
		/* Tell clients which CAs we accept, so that one holding several
		 * certificates presents the right one. */
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->ca_file);
		if (names == NULL) {
			tls_fail(ret_err, true, "cannot read CA names from %s", c->ca_file);
			goto fail;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

SSL_CTX *tls_client_ctx(const struct tls_config *c, const char *server_name, char **ret_err)
{
	if ((c->cert_file == NULL) != (c->key_file == NULL)) {
		tls_fail(ret_err, false, "cert_file and key_file go together");
		return NULL;
	}
	SSL_CTX *ctx = tls_ctx_new(TLS_client_method(), ret_err);
	if (ctx == NULL)
		return NULL;
	if (c->cert_file != NULL && tls_load_identity(ctx, c->cert_file, c->key_file, ret_err) < 0)
		goto fail;
	if (c->ca_file != NULL) {
		if (tls_load_ca(ctx, c->ca_file, ret_err) < 0)
			goto fail;
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		tls_fail(ret_err, true, "cannot load the system's CA certificates");
		goto fail;
	}
	if (server_name != NULL && tls_expect_name(SSL_CTX_get0_param(ctx), server_name) < 0) {
		tls_fail(ret_err, false, "bad server name \"%s\"", server_name);
		goto fail;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static struct bufferevent *tls_bufferevent(struct event_base *base, evutil_socket_t fd, SSL *ssl,
                                           enum bufferevent_ssl_state state)
{
	/* With BEV_OPT_CLOSE_ON_FREE, libevent frees ssl (and with it the
	 * socket) itself when this fails. Deferred callbacks keep our callbacks
	 * from running inside OpenSSL's read and write loops. */
	struct bufferevent *bev = bufferevent_openssl_socket_new(
	    base, fd, ssl, state, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL)
		return NULL;
	/* Frames carry their own lengths, so a stream cut short is caught
	 * there; peers that close without close_notify then read as EOF
	 * rather than as an error. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

struct bufferevent *tls_accept(struct event_base *base, evutil_socket_t fd, SSL_CTX *ctx)
{
	SSL *ssl = SSL_new(ctx);
	if (ssl == NULL) {
		ERR_clear_error();
		evutil_closesocket(fd);
		return NULL;
	}
	return tls_bufferevent(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING);
}

SSL *tls_client_ssl(SSL_CTX *ctx, const char *server_name)
{
	SSL *ssl = SSL_new(ctx);
	if (ssl == NULL)
		goto fail;
	if (server_name != NULL && tls_expect_name(SSL_get0_param(ssl), server_name) < 0)
		goto fail;
	/* The name checked, given here or inherited from the context, is also
	 * sent as SNI; RFC 6066 forbids IP addresses there. */
	const char *sni = X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0);
	if (sni != NULL && SSL_set_tlsext_host_name(ssl, sni) != 1)
		goto fail;
	return ssl;
fail:
	SSL_free(ssl);
	ERR_clear_error();
	return NULL;
}

struct bufferevent *tls_connect(struct event_base *base, SSL_CTX *ctx, const char *server_name)
{
	SSL *ssl = tls_client_ssl(ctx, server_name);
	if (ssl == NULL)
		return NULL;
	return tls_bufferevent(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING);
}

/* A name fit to identify a peer: not empty, no NUL (which would let
 * "a\0b" pass for "a"), no control characters that would garble logs. */
static bool tls_usable_name(const unsigned char *s, int n)
{
	if (n <= 0)
		return false;
	for (int i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

static int tls_copy_name(const unsigned char *s, int n, char *buf, size_t len)
{
	if ((size_t)n >= len)
		return -ENOSPC;
	memcpy(buf, s, (size_t)n);
	buf[n] = '\0';
	return 0;
}

int tls_peer_name(struct bufferevent *bev, char *buf, size_t len)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	if (ssl == NULL)
		return -EINVAL;
	X509 *cert = SSL_get0_peer_certificate(ssl);
	if (cert == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
		return -ENOENT;

	/* The last CN is the most specific one, as X509_check_host reads it. */
	X509_NAME *subject = X509_get_subject_name(cert);
	int idx = -1;
	for (int i; (i = X509_NAME_get_index_by_NID(subject, NID_commonName, idx)) >= 0;)
		idx = i;
	if (idx >= 0) {
		ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
		unsigned char *utf8 = NULL;
		int n = ASN1_STRING_to_UTF8(&utf8, data);
		int r = -ENOENT;
		if (n > 0 && tls_usable_name(utf8, n))
			r = tls_copy_name(utf8, n, buf, len);
		OPENSSL_free(utf8);
		if (r != -ENOENT)
			return r;
	}

	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	int r = -ENOENT;
	for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		if (gn->type != GEN_DNS)
			continue;
		const unsigned char *s = ASN1_STRING_get0_data(gn->d.dNSName);
		int n = ASN1_STRING_length(gn->d.dNSName);
		if (tls_usable_name(s, n))
			r = tls_copy_name(s, n, buf, len);
		break;
	}
	GENERAL_NAMES_free(sans);
	ERR_clear_error();
	return r;
}

const char *tls_error(struct bufferevent *bev, char *buf, size_t len)
{
	/* libevent hands the recorded errors back newest first; the oldest is
	 * the cause. It records SSL_get_error()'s code (1, 5, ...) among them,
	 * which is no OpenSSL error code: those have a library, or are system
	 * errors. */
	unsigned long e, first = 0;
	while ((e = bufferevent_get_openssl_error(bev)) != 0)
		if (ERR_SYSTEM_ERROR(e) || ERR_GET_LIB(e) != 0)
			first = e;
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	long verify = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
	char rbuf[256];
	if (first != 0) {
		const char *reason = tls_reason_text(first, rbuf, sizeof(rbuf));
		if (verify != X509_V_OK)
			snprintf(buf, len, "%s (%s)", reason,
			         X509_verify_cert_error_string(verify));
		else
			snprintf(buf, len, "%s", reason);
	} else {
		int err = EVUTIL_SOCKET_ERROR();
		if (err != 0 && err != EAGAIN)
			snprintf(buf, len, "%s", strerror(err));
		else
			snprintf(buf, len, "connection closed");
	}
	return buf;
}
