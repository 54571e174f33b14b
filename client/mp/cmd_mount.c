/* mp mount: the command-line glue of client/mount/mount.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "mount.h"

static int mount_parse_seconds(struct ctx *ctx, const char *name, const char *v, double *ret)
{
	char *end = NULL;
	errno = 0;
	double d = strtod(v, &end);
	if (errno != 0 || end == v || *end != '\0' || d < 0 || d > 86400)
		return ctx_usage(ctx, "-o %s=%s: give seconds between 0 and 86400", name, v);
	*ret = d;
	return 0;
}

/* -o ro,allow_other,entry_timeout=S,attr_timeout=S,poll=S,log=FILE,staging=DIR */
static int mount_parse_options(struct ctx *ctx, char *list, struct mount_options *o,
                               const char **log_path)
{
	for (char *save = NULL, *opt = strtok_r(list, ",", &save); opt != NULL;
	     opt = strtok_r(NULL, ",", &save)) {
		char *v = strchr(opt, '=');
		if (v != NULL)
			*v++ = '\0';
		int rc = 0;
		if (strcmp(opt, "ro") == 0 && v == NULL)
			o->read_only = true;
		else if (strcmp(opt, "rw") == 0 && v == NULL)
			o->read_only = false;
		else if (strcmp(opt, "allow_other") == 0 && v == NULL)
			o->allow_other = true;
		else if (strcmp(opt, "entry_timeout") == 0 && v != NULL)
			rc = mount_parse_seconds(ctx, opt, v, &o->entry_timeout);
		else if (strcmp(opt, "attr_timeout") == 0 && v != NULL)
			rc = mount_parse_seconds(ctx, opt, v, &o->attr_timeout);
		else if (strcmp(opt, "poll") == 0 && v != NULL)
			rc = mount_parse_seconds(ctx, opt, v, &o->poll_interval);
		else if (strcmp(opt, "log") == 0 && v != NULL && *v != '\0')
			*log_path = v;
		else if (strcmp(opt, "staging") == 0 && v != NULL && *v != '\0')
			o->staging_dir = v;
		else
			return ctx_usage(ctx, "unknown mount option '%s%s%s'", opt,
			                 v != NULL ? "=" : "", v != NULL ? v : "");
		if (rc != 0)
			return rc;
	}
	return 0;
}

int cmd_mount(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"foreground", no_argument, NULL, 'f'},
	    {"options", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct mount_options o = {.entry_timeout = 1, .attr_timeout = 1, .poll_interval = 0.2};
	const char *log_path = NULL;
	bool foreground = false;
	int opt;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "fo:h", opts)) != -1) {
		switch (opt) {
		case 'f':
			foreground = true;
			break;
		case 'o': {
			int rc = mount_parse_options(ctx, optarg, &o, &log_path);
			if (rc != 0)
				return rc;
			break;
		}
		case 'h':
			return commands_print_help("mount");
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind < 1)
		return ctx_usage(ctx, "missing MOUNTPOINT");
	if (argc - optind > 1)
		return ctx_usage(ctx, "extra operand '%s'", argv[optind + 1]);
	const char *mountpoint = argv[optind];

	/* The background process runs in /: keep the configuration's path. */
	char *config = NULL;
	if (ctx->config_path != NULL) {
		config = realpath(ctx->config_path, NULL);
		if (config == NULL)
			return ctx_failf(ctx, ctx->config_path, "%s", ctx_strerror(errno));
		ctx->config_path = config;
	}
	char *log_abs = NULL;
	if (!foreground) {
		if (log_path == NULL) {
			if (asprintf(&log_abs, "/tmp/mp-mount-%u.log", (unsigned)getuid()) < 0)
				log_abs = NULL;
		} else if (log_path[0] != '/') {
			char *cwd = getcwd(NULL, 0);
			if (cwd == NULL || asprintf(&log_abs, "%s/%s", cwd, log_path) < 0)
				log_abs = NULL;
			free(cwd);
		} else {
			log_abs = strdup(log_path);
		}
		if (log_abs == NULL) {
			free(config);
			return ctx_failf(ctx, NULL, "out of memory");
		}
	}

	/* Check the site answers before mounting, in the foreground, so that a
	 * bad configuration is reported here rather than in a log. The
	 * handle is then closed: its threads would not survive the fork. */
	int rc = ctx_open(ctx);
	mp_error err = {0};
	if (rc != 0)
		goto out;
	mp_node root = {0};
	if (mp_stat(ctx->client, "/", NULL, &root, &err) < 0) {
		rc = ctx_fail(ctx, "/", &err);
		goto out;
	}
	mp_node_clear(&root);
	mp_client_close(ctx->client);
	ctx->client = NULL;

	struct mount *m = NULL;
	if (mount_new(mountpoint, &o, &m, &err) < 0) {
		rc = ctx_fail(ctx, mountpoint, &err);
		goto out;
	}
	if (!foreground && mount_daemonize(m, log_abs, &err) < 0) {
		mount_free(m);
		rc = ctx_fail(ctx, mountpoint, &err);
		goto out;
	}
	rc = ctx_open(ctx);
	if (rc == 0 && mount_run(m, ctx->client, &err) < 0)
		rc = ctx_fail(ctx, mountpoint, &err);
	mount_free(m);
out:
	free(log_abs);
	free(config);
	return rc;
}
