/* TLS contexts and bufferevents: a CA, server and client certificates are
 * made with the OpenSSL API in a temporary directory, then a server
 * (tls_accept) and a client (tls_connect) talk in one event loop. */
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "tls.h"

static char dir[64];

static char *path(const char *name)
{
	static char bufs[8][128];
	static int next;
	char *p = bufs[next++ % 8];
	snprintf(p, sizeof(bufs[0]), "%s/%s", dir, name);
	return p;
}

/* --- certificates ---------------------------------------------------------- */

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A certificate for key named cn, signed by issuer (self-signed when
 * NULL). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, bool ca,
                       const char *san)
{
	static long serial = 1;
	X509 *x = X509_new();
	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"mirrorplane",
	                           -1, -1, 0);
	if (cn != NULL)
		X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
		                           -1, 0);
	X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
	X509 *signer = issuer != NULL ? issuer : x;
	add_ext(x, signer, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
	add_ext(x, signer, NID_subject_key_identifier, "hash");
	if (ca) {
		add_ext(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		add_ext(x, signer, NID_authority_key_identifier, "keyid:always");
		add_ext(x, signer, NID_key_usage, "critical,digitalSignature");
		add_ext(x, signer, NID_ext_key_usage, "serverAuth,clientAuth");
	}
	if (san != NULL)
		add_ext(x, signer, NID_subject_alt_name, san);
	assert_true(X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static void write_cert(const char *name, X509 *x)
{
	FILE *f = fopen(path(name), "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
}

static void write_key(const char *name, EVP_PKEY *k)
{
	FILE *f = fopen(path(name), "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
}

static const char *const files[] = {
    "ca.pem",      "ca.key",      "other-ca.pem", "other-ca.key", "server.pem",
    "server.key",  "client.pem",  "client.key",   "rogue.pem",    "rogue.key",
    "sanonly.pem", "sanonly.key", "garbage.pem",  "bundle.pem",   "enc.key",
};

static int setup_certs(void **state)
{
	strcpy(dir, "/tmp/mp-test-tls-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	EVP_PKEY *ca_key = EVP_EC_gen("P-256");
	EVP_PKEY *other_key = EVP_EC_gen("P-256");
	EVP_PKEY *server_key = EVP_EC_gen("P-256");
	EVP_PKEY *client_key = EVP_EC_gen("P-256");
	EVP_PKEY *rogue_key = EVP_EC_gen("P-256");
	EVP_PKEY *sanonly_key = EVP_RSA_gen(2048);
	X509 *ca = make_cert(ca_key, "mp test CA", NULL, NULL, true, NULL);
	/* Same subject as the real CA, different key: only the key tells. */
	X509 *other = make_cert(other_key, "mp test CA", NULL, NULL, true, NULL);
	X509 *server = make_cert(server_key, "mp-test-server", ca, ca_key, false,
	                         "DNS:localhost,IP:127.0.0.1");
	X509 *client = make_cert(client_key, "site-eu-1", ca, ca_key, false, "DNS:eu-1.example");
	X509 *rogue = make_cert(rogue_key, "site-rogue", other, other_key, false, "DNS:localhost");
	X509 *sanonly = make_cert(sanonly_key, NULL, ca, ca_key, false,
	                          "IP:10.0.0.1,DNS:us-2.example,DNS:other.example");
	write_cert("ca.pem", ca);
	write_key("ca.key", ca_key);
	write_cert("other-ca.pem", other);
	write_key("other-ca.key", other_key);
	write_cert("server.pem", server);
	write_key("server.key", server_key);
	write_cert("client.pem", client);
	write_key("client.key", client_key);
	write_cert("rogue.pem", rogue);
	write_key("rogue.key", rogue_key);
	write_cert("sanonly.pem", sanonly);
	write_key("sanonly.key", sanonly_key);
	FILE *f = fopen(path("garbage.pem"), "w");
	fputs("this is not a certificate\n", f);
	fclose(f);
	/* Both CAs in one bundle. */
	f = fopen(path("bundle.pem"), "w");
	PEM_write_X509(f, other);
	PEM_write_X509(f, ca);
	fclose(f);
	/* An encrypted key must be refused, not prompted for. */
	f = fopen(path("enc.key"), "w");
	PEM_write_PrivateKey(f, server_key, EVP_aes_128_cbc(), (unsigned char *)"secret", 6, NULL,
	                     NULL);
	fclose(f);
	X509_free(ca);
	X509_free(other);
	X509_free(server);
	X509_free(client);
	X509_free(rogue);
	X509_free(sanonly);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(other_key);
	EVP_PKEY_free(server_key);
	EVP_PKEY_free(client_key);
	EVP_PKEY_free(rogue_key);
	EVP_PKEY_free(sanonly_key);
	return 0;
}

static int teardown_certs(void **state)
{
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(path(files[i]));
	rmdir(dir);
	return 0;
}

/* --- one connection in one loop ------------------------------------------ */

struct side {
	struct bufferevent *bev;
	bool connected, failed, eof;
	int peer_rc;
	char peer[128];
	char error[256];
	struct evbuffer *got;
};

struct conn {
	struct event_base *base;
	SSL_CTX *server_ctx;
	struct side server, client;
	bool timed_out;
};

static void conn_check_done(struct conn *c)
{
	bool client_done =
	    c->client.failed || c->client.eof || evbuffer_get_length(c->client.got) >= 4;
	bool server_done = c->server.failed || c->server.eof || c->server.connected;
	if (client_done && server_done)
		event_base_loopexit(c->base, NULL);
}

static void side_event(struct conn *c, struct side *s, short what)
{
	if (what & BEV_EVENT_CONNECTED) {
		s->connected = true;
		s->peer_rc = tls_peer_name(s->bev, s->peer, sizeof(s->peer));
		if (s == &c->client)
			bufferevent_write(s->bev, "ping", 4);
	}
	if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
		if (what & BEV_EVENT_ERROR)
			s->failed = true;
		else
			s->eof = true;
		tls_error(s->bev, s->error, sizeof(s->error));
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	}
	conn_check_done(c);
}

static void server_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	side_event(c, &c->server, what);
}

static void client_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	side_event(c, &c->client, what);
}

static void server_read(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	evbuffer_add_buffer(c->server.got, bufferevent_get_input(bev));
	if (evbuffer_get_length(c->server.got) >= 4)
		bufferevent_write(bev, "pong", 4);
}

static void client_read(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	evbuffer_add_buffer(c->client.got, bufferevent_get_input(bev));
	conn_check_done(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
	struct conn *c = arg;
	c->server.bev = tls_accept(c->base, fd, c->server_ctx);
	assert_non_null(c->server.bev);
	bufferevent_setcb(c->server.bev, server_read, NULL, server_event, c);
	bufferevent_enable(c->server.bev, EV_READ | EV_WRITE);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	c->timed_out = true;
	event_base_loopexit(c->base, NULL);
}

/* Runs one connection between a server on server_ctx and a client on
 * client_ctx naming server_name, until both sides are done (the client
 * heard "pong", or each side saw an error or EOF). */
static void run_conn(struct conn *c, SSL_CTX *server_ctx, SSL_CTX *client_ctx,
                     const char *server_name)
{
	memset(c, 0, sizeof(*c));
	c->base = event_base_new();
	c->server_ctx = server_ctx;
	c->server.got = evbuffer_new();
	c->client.got = evbuffer_new();
	c->server.peer_rc = c->client.peer_rc = 1;

	struct sockaddr_in sin = {.sin_family = AF_INET};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct evconnlistener *l = evconnlistener_new_bind(
	    c->base, on_accept, c, LEV_OPT_CLOSE_ON_FREE, -1, (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(l);
	socklen_t slen = sizeof(sin);
	getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &slen);

	c->client.bev = tls_connect(c->base, client_ctx, server_name);
	assert_non_null(c->client.bev);
	bufferevent_setcb(c->client.bev, client_read, NULL, client_event, c);
	bufferevent_enable(c->client.bev, EV_READ | EV_WRITE);
	assert_int_equal(
	    bufferevent_socket_connect(c->client.bev, (struct sockaddr *)&sin, sizeof(sin)), 0);

	struct event *timer = evtimer_new(c->base, on_timeout, c);
	struct timeval tv = {5, 0};
	evtimer_add(timer, &tv);
	event_base_dispatch(c->base);
	event_free(timer);
	evconnlistener_free(l);
}

static void conn_free(struct conn *c)
{
	if (c->server.bev != NULL)
		bufferevent_free(c->server.bev);
	bufferevent_free(c->client.bev);
	evbuffer_free(c->server.got);
	evbuffer_free(c->client.got);
	event_base_free(c->base);
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (strstr(haystack, needle) == NULL)
		fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static bool got(struct side *s, const char *text)
{
	size_t n = strlen(text);
	return evbuffer_get_length(s->got) == n &&
	       memcmp(evbuffer_pullup(s->got, -1), text, n) == 0;
}

static SSL_CTX *server_ctx(const char *cert, const char *key, const char *ca, bool verify)
{
	struct tls_config cfg = {path(cert), path(key), ca != NULL ? path(ca) : NULL, verify};
	char *err = NULL;
	SSL_CTX *ctx = tls_server_ctx(&cfg, &err);
	if (ctx == NULL)
		fail_msg("tls_server_ctx: %s", err);
	return ctx;
}

static SSL_CTX *client_ctx(const char *cert, const char *key, const char *ca, const char *name)
{
	struct tls_config cfg = {cert != NULL ? path(cert) : NULL, key != NULL ? path(key) : NULL,
	                         path(ca), false};
	char *err = NULL;
	SSL_CTX *ctx = tls_client_ctx(&cfg, name, &err);
	if (ctx == NULL)
		fail_msg("tls_client_ctx: %s", err);
	return ctx;
}

/* --- tests ------------------------------------------------------------------ */

static char sni_seen[128];

static int record_sni(SSL *ssl, int *alert, void *arg)
{
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	snprintf(sni_seen, sizeof(sni_seen), "%s", name != NULL ? name : "(none)");
	return SSL_TLSEXT_ERR_OK;
}

static void test_exchange(void **state)
{
	SSL_CTX *s = server_ctx("server.pem", "server.key", NULL, false);
	SSL_CTX_set_tlsext_servername_callback(s, record_sni);
	SSL_CTX *cl = client_ctx(NULL, NULL, "ca.pem", NULL);
	assert_int_equal(SSL_CTX_get_min_proto_version(s), TLS1_2_VERSION);
	assert_int_equal(SSL_CTX_get_min_proto_version(cl), TLS1_2_VERSION);
	struct conn c;
	run_conn(&c, s, cl, "localhost");
	assert_false(c.timed_out);
	assert_true(c.client.connected);
	assert_true(c.server.connected);
	assert_true(got(&c.server, "ping"));
	assert_true(got(&c.client, "pong"));
	assert_string_equal(sni_seen, "localhost");
	/* The client verified the server and names it by its CN. */
	assert_int_equal(c.client.peer_rc, 0);
	assert_string_equal(c.client.peer, "mp-test-server");
	/* No client certificate was asked for. */
	assert_int_equal(c.server.peer_rc, -ENOENT);
	/* Too small a buffer. */
	char small[4];
	assert_int_equal(tls_peer_name(c.client.bev, small, sizeof(small)), -ENOSPC);
	conn_free(&c);

	/* By IP address, which the certificate lists too; IP addresses are
	 * not sent as SNI. */
	run_conn(&c, s, cl, "127.0.0.1");
	assert_true(got(&c.client, "pong"));
	assert_string_equal(sni_seen, "(none)");
	conn_free(&c);
	SSL_CTX_free(cl);

	/* The name may be given once to the context. */
	cl = client_ctx(NULL, NULL, "ca.pem", "localhost");
	sni_seen[0] = '\0';
	run_conn(&c, s, cl, NULL);
	assert_true(got(&c.client, "pong"));
	assert_string_equal(sni_seen, "localhost");
	conn_free(&c);
	SSL_CTX_free(cl);
	cl = client_ctx(NULL, NULL, "ca.pem", "eu-1.example");
	run_conn(&c, s, cl, NULL);
	assert_true(c.client.failed);
	assert_string_equal(c.client.error, "certificate verify failed (hostname mismatch)");
	conn_free(&c);
	/* A connection's own name replaces the context's. */
	run_conn(&c, s, cl, "127.0.0.1");
	assert_true(got(&c.client, "pong"));
	conn_free(&c);
	SSL_CTX_free(cl);

	/* TLS 1.2 is spoken. */
	cl = client_ctx(NULL, NULL, "ca.pem", NULL);
	SSL_CTX_set_max_proto_version(cl, TLS1_2_VERSION);
	run_conn(&c, s, cl, "localhost");
	assert_true(got(&c.client, "pong"));
	assert_int_equal(SSL_version(bufferevent_openssl_get_ssl(c.server.bev)), TLS1_2_VERSION);
	conn_free(&c);
	SSL_CTX_free(cl);
	SSL_CTX_free(s);
}

static void test_mutual(void **state)
{
	SSL_CTX *s = server_ctx("server.pem", "server.key", "ca.pem", true);
	SSL_CTX *cl = client_ctx("client.pem", "client.key", "ca.pem", NULL);
	struct conn c;
	run_conn(&c, s, cl, "localhost");
	assert_false(c.timed_out);
	assert_true(got(&c.client, "pong"));
	assert_int_equal(c.server.peer_rc, 0);
	assert_string_equal(c.server.peer, "site-eu-1");
	assert_int_equal(c.client.peer_rc, 0);
	assert_string_equal(c.client.peer, "mp-test-server");
	conn_free(&c);
	SSL_CTX_free(cl);

	/* A certificate without a CN is named by its first DNS name. */
	cl = client_ctx("sanonly.pem", "sanonly.key", "ca.pem", NULL);
	run_conn(&c, s, cl, "localhost");
	assert_true(got(&c.client, "pong"));
	assert_int_equal(c.server.peer_rc, 0);
	assert_string_equal(c.server.peer, "us-2.example");
	conn_free(&c);
	SSL_CTX_free(cl);

	/* Over TLS 1.2 as well. */
	cl = client_ctx("client.pem", "client.key", "ca.pem", NULL);
	SSL_CTX_set_max_proto_version(cl, TLS1_2_VERSION);
	run_conn(&c, s, cl, "localhost");
	assert_true(got(&c.client, "pong"));
	assert_string_equal(c.server.peer, "site-eu-1");
	conn_free(&c);
	SSL_CTX_free(cl);
	SSL_CTX_free(s);
}

static void test_mutual_no_client_cert(void **state)
{
	SSL_CTX *s = server_ctx("server.pem", "server.key", "ca.pem", true);
	SSL_CTX *cl = client_ctx(NULL, NULL, "ca.pem", NULL);
	struct conn c;
	run_conn(&c, s, cl, "localhost");
	assert_false(c.timed_out);
	assert_true(c.server.failed);
	assert_false(c.server.connected);
	assert_contains(c.server.error, "peer did not return a certificate");
	assert_int_equal(evbuffer_get_length(c.server.got), 0);
	assert_false(got(&c.client, "pong"));
	conn_free(&c);
	SSL_CTX_free(cl);

	/* A certificate from another CA is refused as well. */
	cl = client_ctx("rogue.pem", "rogue.key", "ca.pem", NULL);
	run_conn(&c, s, cl, "localhost");
	assert_false(c.timed_out);
	assert_true(c.server.failed);
	assert_false(c.server.connected);
	assert_contains(c.server.error, "certificate verify failed");
	assert_int_equal(evbuffer_get_length(c.server.got), 0);
	conn_free(&c);
	SSL_CTX_free(cl);
	SSL_CTX_free(s);
}

static int accept_anything(int ok, X509_STORE_CTX *store)
{
	return 1;
}

/* Should a verify callback ever wave a certificate through, its name must
 * still not be taken for a verified identity. */
static void test_peer_name_unverified(void **state)
{
	SSL_CTX *s = server_ctx("server.pem", "server.key", "ca.pem", true);
	SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, accept_anything);
	SSL_CTX *cl = client_ctx("rogue.pem", "rogue.key", "ca.pem", NULL);
	struct conn c;
	run_conn(&c, s, cl, "localhost");
	assert_true(got(&c.client, "pong"));
	assert_int_equal(c.server.peer_rc, -ENOENT);
	conn_free(&c);
	SSL_CTX_free(cl);
	SSL_CTX_free(s);
}

static void test_wrong_ca(void **state)
{
	SSL_CTX *s = server_ctx("server.pem", "server.key", NULL, false);
	SSL_CTX *cl = client_ctx(NULL, NULL, "other-ca.pem", NULL);
	struct conn c;
	run_conn(&c, s, cl, "localhost");
	assert_false(c.timed_out);
	assert_true(c.client.failed);
	assert_false(c.client.connected);
	assert_contains(c.client.error, "certificate verify failed");
	assert_true(c.server.failed);
	assert_int_equal(evbuffer_get_length(c.server.got), 0);
	conn_free(&c);
	SSL_CTX_free(cl);

	/* A server whose certificate is for another name. */
	cl = client_ctx(NULL, NULL, "ca.pem", NULL);
	run_conn(&c, s, cl, "eu-1.example");
	assert_true(c.client.failed);
	assert_string_equal(c.client.error, "certificate verify failed (hostname mismatch)");
	conn_free(&c);
	run_conn(&c, s, cl, "10.0.0.1");
	assert_true(c.client.failed);
	assert_string_equal(c.client.error, "certificate verify failed (IP address mismatch)");
	conn_free(&c);
	SSL_CTX_free(cl);

	/* With both CAs trusted the server is accepted. */
	cl = client_ctx(NULL, NULL, "bundle.pem", NULL);
	run_conn(&c, s, cl, "localhost");
	assert_true(got(&c.client, "pong"));
	conn_free(&c);
	SSL_CTX_free(cl);
	SSL_CTX_free(s);
}

static void expect_server_err(const char *cert, const char *key, const char *ca, bool verify,
                              const char *expected)
{
	struct tls_config cfg = {cert, key, ca, verify};
	char *err = NULL;
	SSL_CTX *ctx = tls_server_ctx(&cfg, &err);
	assert_null(ctx);
	assert_non_null(err);
	if (strcmp(err, expected) != 0)
		fail_msg("got \"%s\", expected \"%s\"", err, expected);
	free(err);
	assert_int_equal(ERR_peek_error(), 0);
}

static void test_config_errors(void **state)
{
	char expected[512];
	snprintf(expected, sizeof(expected),
	         "tls: cannot load certificate %s: No such file or directory", path("missing.pem"));
	expect_server_err(path("missing.pem"), path("server.key"), NULL, false, expected);

	snprintf(expected, sizeof(expected), "tls: cannot load certificate %s: no start line",
	         path("garbage.pem"));
	expect_server_err(path("garbage.pem"), path("server.key"), NULL, false, expected);

	snprintf(expected, sizeof(expected), "tls: cannot load key %s: No such file or directory",
	         path("missing.key"));
	expect_server_err(path("server.pem"), path("missing.key"), NULL, false, expected);

	snprintf(expected, sizeof(expected), "tls: key %s does not match certificate %s",
	         path("client.key"), path("server.pem"));
	expect_server_err(path("server.pem"), path("client.key"), NULL, false, expected);

	/* The RSA key of another certificate: a different type as well. */
	snprintf(expected, sizeof(expected), "tls: key %s does not match certificate %s",
	         path("sanonly.key"), path("server.pem"));
	expect_server_err(path("server.pem"), path("sanonly.key"), NULL, false, expected);

	struct tls_config cfg = {path("server.pem"), path("enc.key"), NULL, false};
	char *err = NULL;
	assert_null(tls_server_ctx(&cfg, &err));
	snprintf(expected, sizeof(expected), "tls: cannot load key %s: ", path("enc.key"));
	assert_int_equal(strncmp(err, expected, strlen(expected)), 0);
	free(err);

	snprintf(expected, sizeof(expected),
	         "tls: cannot load CA file %s: No such file or directory", path("missing-ca.pem"));
	expect_server_err(path("server.pem"), path("server.key"), path("missing-ca.pem"), true,
	                  expected);

	expect_server_err(path("server.pem"), path("server.key"), NULL, true,
	                  "tls: verify_peer needs ca_file");
	expect_server_err(NULL, path("server.key"), NULL, false,
	                  "tls: a server needs cert_file and key_file");

	/* Clients: identity files go together, and fail the same way. */
	struct tls_config ccfg = {path("client.pem"), NULL, path("ca.pem"), false};
	err = NULL;
	assert_null(tls_client_ctx(&ccfg, NULL, &err));
	assert_string_equal(err, "tls: cert_file and key_file go together");
	free(err);
	ccfg = (struct tls_config){path("missing.pem"), path("client.key"), path("ca.pem"), false};
	assert_null(tls_client_ctx(&ccfg, NULL, &err));
	snprintf(expected, sizeof(expected),
	         "tls: cannot load certificate %s: No such file or directory", path("missing.pem"));
	assert_string_equal(err, expected);
	free(err);
	ccfg = (struct tls_config){NULL, NULL, path("garbage.pem"), false};
	assert_null(tls_client_ctx(&ccfg, NULL, &err));
	snprintf(expected, sizeof(expected), "tls: cannot load CA file %s: ", path("garbage.pem"));
	assert_int_equal(strncmp(err, expected, strlen(expected)), 0);
	free(err);

	/* ret_err may be NULL. */
	cfg = (struct tls_config){path("missing.pem"), path("server.key"), NULL, false};
	assert_null(tls_server_ctx(&cfg, NULL));
}

static void test_not_tls(void **state)
{
	struct event_base *base = event_base_new();
	struct bufferevent *plain = bufferevent_socket_new(base, -1, 0);
	char buf[64];
	assert_int_equal(tls_peer_name(plain, buf, sizeof(buf)), -EINVAL);
	bufferevent_free(plain);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exchange),
	    cmocka_unit_test(test_mutual),
	    cmocka_unit_test(test_mutual_no_client_cert),
	    cmocka_unit_test(test_peer_name_unverified),
	    cmocka_unit_test(test_wrong_ca),
	    cmocka_unit_test(test_config_errors),
	    cmocka_unit_test(test_not_tls),
	};
	return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
