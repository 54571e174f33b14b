/* Fuzz target for what a mirror takes from its subscribers and its
 * upstream besides changes' application: SITE_REPORT bodies
 * (common/proto/sitereport.c) and the inode list of a change record
 * (change_each_put, which the replication worker follows). A report that
 * parses must hold clean names and survive a round trip through the packer
 * unchanged; the table never holds more than SITEREPORT_MAX sites. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "change.h"
#include "msg.h"
#include "sitereport.h"

static void check_name(const char *s, size_t max, bool empty_ok)
{
	size_t n = strnlen(s, max + 1);
	if (n > max || (n == 0 && !empty_ok))
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '"' || s[i] == '\\')
			abort();
}

static void count_put(void *arg, uint64_t ino)
{
	(void)ino;
	(*(size_t *)arg)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct site_report in[SITEREPORT_MAX], again[SITEREPORT_MAX];
	static struct site_table *table;
	if (table == NULL && (table = site_table_new()) == NULL)
		abort();
	size_t puts = 0;
	change_each_put(data, size, count_put, &puts);
	msgpack_unpacked u;
	char err[256] = "";
	if (msg_unpack(data, size, &u, err, sizeof(err)) != 0)
		return 0;
	size_t n = 0;
	int r = site_report_parse(&u.data, in, SITEREPORT_MAX, &n, err, sizeof(err));
	if (r != 0 && (r > 0 || err[0] == '\0'))
		abort();
	if (r == 0) {
		if (n > SITEREPORT_MAX)
			abort();
		for (size_t i = 0; i < n; i++) {
			check_name(in[i].site, SITEREPORT_NAME, false);
			check_name(in[i].upstream, SITEREPORT_NAME, true);
			check_name(in[i].state, 15, true);
		}
		/* The table takes it; packed from the table it parses the same. */
		if (site_table_receive(table, &u.data, 1, err, sizeof(err)) != 0)
			abort();
		static struct site_report listed[SITEREPORT_MAX];
		size_t nl = site_table_list(table, 1, listed, SITEREPORT_MAX);
		if (nl > SITEREPORT_MAX)
			abort();
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 1);
		site_report_pack(&pk, n > 0 ? &in[0] : NULL, NULL, 1);
		msgpack_unpacked u2;
		size_t n2 = 0;
		if (msg_unpack((const uint8_t *)sb.data, sb.size, &u2, err, sizeof(err)) != 0 ||
		    site_report_parse(&u2.data, again, SITEREPORT_MAX, &n2, err, sizeof(err)) !=
		        0 ||
		    n2 != (n > 0) ||
		    (n > 0 && (strcmp(again[0].site, in[0].site) != 0 ||
		               strcmp(again[0].upstream, in[0].upstream) != 0 ||
		               again[0].version != in[0].version ||
		               again[0].repl_pending_bytes != in[0].repl_pending_bytes)))
			abort();
		msgpack_unpacked_destroy(&u2);
		msgpack_sbuffer_destroy(&sb);
	}
	msgpack_unpacked_destroy(&u);
	return 0;
}
