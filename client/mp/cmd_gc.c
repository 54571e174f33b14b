/* mp gc: garbage collection at the primary: status, a pass now, and the
 * operator's confirmation of a pass the breaker holds. */
#include <getopt.h>
#include <inttypes.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <mirrorplane/gc.h>

#include "commands.h"
#include "output.h"

static const struct option gc_opts[] = {
    {"help", no_argument, NULL, 'h'},          {"status", no_argument, NULL, 's'},
    {"now", no_argument, NULL, 'n'},           {"confirm", no_argument, NULL, 'c'},
    {"confirm-sites", no_argument, NULL, 'S'}, {NULL, 0, NULL, 0},
};

static void gc_print_json(const mp_gc_status *s)
{
	struct jsonw w;
	jsonw_init(&w, stdout);
	jsonw_object_begin(&w);
	jsonw_field_string(&w, "state", s->state);
	jsonw_field_uint(&w, "would_delete", s->would_delete);
	jsonw_field_string(&w, "held_reason", s->held_reason);
	jsonw_field_string(&w, "bucket", s->bucket);
	jsonw_field_uint(&w, "trash_objects", s->trash_objects);
	jsonw_field_uint(&w, "trash_bytes", s->trash_bytes);
	jsonw_field_uint(&w, "live_objects", s->live_objects);
	jsonw_field_uint(&w, "deleted_total", s->deleted_total);
	jsonw_field_uint(&w, "deleted_bytes_total", s->deleted_bytes_total);
	jsonw_field_uint(&w, "failures_total", s->failures_total);
	jsonw_field_uint(&w, "passes", s->passes);
	jsonw_field_int(&w, "last_pass_time_ns", s->last_pass_time_ns);
	jsonw_field_uint(&w, "last_pass_deleted", s->last_pass_deleted);
	jsonw_field_uint(&w, "last_pass_failed", s->last_pass_failed);
	jsonw_field_string(&w, "last_error", s->last_error);
	jsonw_field_uint(&w, "retention_ms", s->retention_ms);
	jsonw_key(&w, "max_delete_ratio");
	jsonw_double(&w, s->max_delete_ratio);
	jsonw_field_uint(&w, "max_delete_count", s->max_delete_count);
	jsonw_field_uint(&w, "version", s->version);
	jsonw_object_end(&w);
	jsonw_finish(&w);
}

static void gc_print_text(const mp_gc_status *s)
{
	char bytes[32], when[64], ret[32];
	output_size(s->trash_bytes, bytes, sizeof(bytes));
	output_duration_ms(s->retention_ms, ret, sizeof(ret));
	printf("state        %s\n", s->state);
	if (strcmp(s->state, "held") == 0) {
		printf("held         the breaker holds a pass that would delete %" PRIu64
		       " objects: %s\n",
		       s->would_delete, s->held_reason);
		printf("             run 'mp gc --confirm' to let it go once\n");
	}
	printf("trash        %" PRIu64 " objects, %s (bucket alias %s)\n", s->trash_objects, bytes,
	       s->bucket);
	printf("retention    %s\n", ret);
	if (s->last_pass_time_ns > 0) {
		output_time_long(s->last_pass_time_ns, when, sizeof(when));
		printf("last pass    %s: %" PRIu64 " deleted, %" PRIu64 " failed\n", when,
		       s->last_pass_deleted, s->last_pass_failed);
	} else {
		printf("last pass    none since the primary started\n");
	}
	output_size(s->deleted_bytes_total, bytes, sizeof(bytes));
	printf("deleted      %" PRIu64 " objects, %s in %" PRIu64 " passes; %" PRIu64 " failures\n",
	       s->deleted_total, bytes, s->passes, s->failures_total);
	printf("breaker      more than %g of the origin's objects or %" PRIu64 " objects\n",
	       s->max_delete_ratio, s->max_delete_count);
	if (s->last_error[0] != '\0')
		printf("last error   %s\n", s->last_error);
}

int cmd_gc(struct ctx *ctx, int argc, char **argv)
{
	int opt, rc;
	mp_gc_action action = MP_GC_STATUS;
	int nactions = 0;
	bool confirm_sites = false;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "h", gc_opts)) != -1) {
		switch (opt) {
		case 'h':
			return commands_print_help(ctx->cmd);
		case 's':
			action = MP_GC_STATUS;
			nactions++;
			break;
		case 'n':
			action = MP_GC_RUN;
			nactions++;
			break;
		case 'c':
			action = MP_GC_CONFIRM;
			nactions++;
			break;
		case 'S':
			confirm_sites = true;
			nactions++;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		return ctx_usage(ctx, "unexpected operand '%s'", argv[optind]);
	if (nactions > 1)
		return ctx_usage(ctx, "--status, --now, --confirm and --confirm-sites go alone");
	if ((rc = ctx_open(ctx)) != 0)
		return rc;
	mp_gc_status s;
	mp_error err = {0};
	if (confirm_sites) {
		/* The sites' breakers hold replicas of their own buckets. */
		mp_call call = {0};
		if (mp_gc_confirm_sites(ctx->client, &call, &err) < 0)
			return ctx_fail(ctx, NULL, &err);
		if (ctx->json)
			printf("{\"sites_confirmed\": true, \"version\": %llu}\n",
			       (unsigned long long)call.version);
		else if (!ctx->quiet)
			printf("every site may now delete the replicas its breaker holds (version "
			       "%llu)\n",
			       (unsigned long long)call.version);
		return EXIT_OK;
	} else if (mp_gc(ctx->client, action, &s, &err) < 0) {
		return ctx_fail(ctx, NULL, &err);
	}
	if (ctx->json)
		gc_print_json(&s);
	else
		gc_print_text(&s);
	return EXIT_OK;
}
