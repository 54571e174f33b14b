/* mp's commands and their help text. */
#include <string.h>

#include "commands.h"

static const struct command commands[] = {
    {"ls", cmd_meta_ls, "ls [-l] [PATH...]", "list directories (default /)",
     "  -l, --long       type and mode, size, modification time, name; symlinks as\n"
     "                   NAME -> TARGET\n"
     "With --json: {\"listings\": [{\"path\", \"type\", \"entries\": [NODE...]}]}; a\n"
     "file operand's entries hold the file itself.\n"},
    {"stat", cmd_meta_stat, "stat PATH...", "show attributes, symlink target, file layout",
     "Symlinks are not followed. With --json: {\"nodes\": [NODE...]}, each with\n"
     "its extents and the version it was read at.\n"},
    {"mkdir", cmd_meta_mkdir, "mkdir [-p] [-m MODE] PATH...", "make directories",
     "  -p, --parents    make missing parents; an existing directory is no error\n"
     "  -m, --mode MODE  octal permission bits (default 0755)\n"},
    {"put", cmd_transfer_put, "put [-r] LOCAL... REMOTE", "upload files (- reads stdin)",
     "Each LOCAL file becomes a new object in the origin bucket, then the file at\n"
     "REMOTE (or REMOTE/NAME when REMOTE is a directory) points at it. With\n"
     "several LOCALs, REMOTE must be an existing directory. A single LOCAL of -\n"
     "reads standard input into memory and writes it to the file REMOTE.\n"
     "  -r, --recursive  upload directories: into REMOTE/NAME when REMOTE is an\n"
     "                   existing directory, else as REMOTE (made with parents)\n"},
    {"get", cmd_transfer_get, "get [-r] REMOTE... LOCAL", "download files (- writes to stdout)",
     "Each REMOTE file is written to LOCAL (or LOCAL/NAME when LOCAL is a\n"
     "directory) through a temporary file. With several REMOTEs, LOCAL must be\n"
     "an existing directory. A LOCAL of - writes the files to stdout, like cat.\n"
     "  -r, --recursive  download directories: into LOCAL/NAME when LOCAL is an\n"
     "                   existing directory, else as LOCAL\n"},
    {"cat", cmd_transfer_cat, "cat PATH...", "write files to stdout", NULL},
    {"rm", cmd_meta_rm, "rm [-r] [-f] PATH...", "remove files, symlinks, empty directories",
     "  -r, --recursive  remove directories and everything below them\n"
     "  -f, --force      a missing PATH is no error\n"
     "The root directory is never removed.\n"},
    {"mv", cmd_meta_mv, "mv FROM TO", "rename or move a node", NULL},
    {"ln", cmd_meta_ln, "ln -s TARGET LINKPATH", "make a symbolic link",
     "  -s, --symbolic   required: hard links are not supported\n"
     "TARGET is stored as given and may be relative.\n"},
    {"import", cmd_transfer_import, "import SOURCE DEST",
     "make a bucket's objects files, without copying",
     "SOURCE is ALIAS or ALIAS/PREFIX, a bucket alias of the configuration\n"
     "(buckets.ALIAS.url). Keys map to paths below DEST (a/b.jpg -> DEST/a/b.jpg).\n"
     "Running it again updates files whose object changed and removes files whose\n"
     "object is gone. Prints what it did.\n"},
    {"status", cmd_status_status, "status", "ask every configured server how it is",
     "Columns: ADDRESS ROLE SITE STATE VERSION LAG STALENESS RTT, and why a server\n"
     "is down. STATE is up, down, or avoided (up now, but the handle still skips\n"
     "it). Exits 1 when no primary answers.\n"},
    {"version", cmd_status_version, "version", "versions: mp, the primary, a mirror; cluster id",
     NULL},
    {"gc", cmd_gc, "gc [--status | --now | --confirm | --confirm-sites]",
     "garbage collection of superseded objects at the primary",
     "  --status   trash objects and bytes, the last pass, the breaker (the default)\n"
     "  --now      run a pass now and print what it did\n"
     "  --confirm  let the pass the breaker holds delete once (it would delete more than\n"
     "             gc.max_delete_ratio or gc.max_delete_count of the origin's objects)\n"
     "  --confirm-sites  let every site delete, once, the replicas of its own bucket\n"
     "             that its breaker holds (replication.gc_max_delete_count/_permille)\n"
     "Objects a write superseded are deleted from the origin after the primary's\n"
     "gc.retention; imported objects never are. --now and --confirm need a token that\n"
     "may write /.\n"},
    {"policy", cmd_policy, "policy check|apply|plan FILE, policy show|status",
     "replication and warmup policies",
     "policy check FILE: offline; prints \"policy OK: N replication rules, M warmup\n"
     "  pipelines\", or each error as FILE:LINE:COL: message on stderr and exits 1.\n"
     "  --sites LIST     the sites a policy may name (a,b,...); unknown ones are errors\n"
     "  --buckets LIST   the bucket aliases a rule may name, likewise\n"
     "policy apply FILE: checks it here, then at the primary, which makes it the\n"
     "  policy of every site at one version; on any error nothing changes. Takes\n"
     "  --sites and --buckets as check does (so does plan).\n"
     "policy show: the policy in force at the site (its YAML; --json: every value).\n"
     "policy plan FILE: what applying FILE would change: rules and pipelines added\n"
     "  (+), changed (~) and removed (-), and the files and bytes each site would\n"
     "  copy to or drop from its bucket. Changes nothing.\n"
     "policy status: replication per rule and site: pending files and bytes, lag,\n"
     "  failures (--json).\n"},
    {"warmup", cmd_warmup,
     "warmup [-f FILE] [--evict|--check] [--background] PATH..., warmup run NAME, "
     "warmup status [NAME], warmup wait PATH... --timeout DUR",
     "fill the site's cache group ahead of reads",
     "warmup PATH...: the site's mirror has each cache node fetch the blocks it owns\n"
     "  of the files under PATH (files, directories or globs) as of its current\n"
     "  version; a progress bar follows the run until every block is cached.\n"
     "  -f, --file FILE  read paths from FILE (one a line, # comments; - for stdin)\n"
     "  --evict          drop their blocks from the group instead\n"
     "  --check          report how much is cached now (asks the nodes; no run)\n"
     "  --background     start the run and return\n"
     "warmup run NAME: a run of the policy's pipeline NAME now [--background].\n"
     "warmup status [NAME]: runs per pipeline: state, version, files and bytes done\n"
     "  of total, rate, ETA, failures (--json).\n"
     "warmup wait PATH... --timeout DUR: exits 0 once every block under each PATH\n"
     "  is cached at its owner in the site's group, 1 at the timeout (what is\n"
     "  missing is printed): a readiness gate for a pod's init container.\n"},
    {"mount", cmd_mount, "mount [-f] [-o OPTIONS] MOUNTPOINT", "mount the namespace (FUSE)",
     "Reads go to the site's mirror and through the library's read path (cache\n"
     "group, site bucket, origin); writes are staged in a local file and uploaded\n"
     "and committed at the primary on close or fsync (close-to-open).\n"
     "  -f, --foreground  stay in the foreground (else: a daemon logging to\n"
     "                   /tmp/mp-mount-UID.log, or -o log=FILE)\n"
     "  -o OPTIONS       comma-separated: ro, allow_other, entry_timeout=S,\n"
     "                   attr_timeout=S (kernel caching, default 1 s), poll=S\n"
     "                   (remote change checks, default 0.2, 0 for none),\n"
     "                   log=FILE, staging=DIR (default $TMPDIR or /tmp)\n"
     "Unmount with fusermount3 -u MOUNTPOINT, umount, or SIGTERM.\n"},
    {"help", commands_help_cmd, "help [COMMAND]", "show this help, or a command's", NULL},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

const struct command *commands_find(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

void commands_usage(FILE *out)
{
	fprintf(out, "usage: mp [OPTIONS] COMMAND [ARGS...]\n"
	             "\n"
	             "Commands (remote paths are absolute):\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  %-28s  %s\n", commands[i].synopsis, commands[i].summary);
	fprintf(out,
	        "\n"
	        "Options (before the command):\n"
	        "  -c, --config FILE        YAML site configuration (default $MP_CONFIG)\n"
	        "      --primary LIST       primaries HOST:PORT,... in order; replaces the\n"
	        "                           configured list (repeatable: appends)\n"
	        "      --mirror LIST        this site's mirrors HOST:PORT,... in order; as\n"
	        "                           --primary\n"
	        "      --token TOKEN        client token (see mp-primary token create)\n"
	        "      --consistency LEVEL  session (default), strong or eventual\n"
	        "      --max-staleness DUR  eventual reads refuse a mirror staler than this\n"
	        "      --timeout DUR        per request to a server (default 2s)\n"
	        "  -o NAME=VALUE            set any configuration option (repeatable), e.g.\n"
	        "                           -o buckets.origin.endpoint=http://127.0.0.1:9000\n"
	        "      --json               print one JSON document on stdout\n"
	        "      --no-progress        no progress bars\n"
	        "  -q, --quiet              no progress bars, no summaries\n"
	        "  -h, --help               show this help\n"
	        "      --version            show mp's version\n"
	        "\n"
	        "Configuration options (-o, or YAML): primary, mirror, token, consistency,\n"
	        "max_staleness, connect_timeout, timeout, read_deadline, probe_interval,\n"
	        "session_file, origin, parallel, part_size, object_size, multipart_threshold,\n"
	        "buckets.ALIAS.{url,endpoint,region,access_key,secret_key,path_style,replica}.\n"
	        "\n"
	        "The session version (read-your-writes across runs) is kept in\n"
	        "$XDG_RUNTIME_DIR/mirrorplane/session, else /tmp/mirrorplane-UID/session;\n"
	        "-o session_file=- turns it off.\n"
	        "\n"
	        "Exit status: 0 success, 1 an operation failed, 2 usage error.\n"
	        "See mp help COMMAND for a command's options.\n");
}

void commands_help(FILE *out, const struct command *cmd)
{
	fprintf(out, "usage: mp [OPTIONS] %s\n\n%s\n", cmd->synopsis, cmd->summary);
	if (cmd->details != NULL)
		fprintf(out, "\n%s", cmd->details);
}

int commands_print_help(const char *name)
{
	const struct command *cmd = commands_find(name);
	if (cmd != NULL)
		commands_help(stdout, cmd);
	return EXIT_OK;
}

int commands_help_cmd(struct ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	int opt;
	ctx_getopt_begin();
	while ((opt = ctx_getopt(ctx, argc, argv, "h", opts)) != -1) {
		if (opt == CTX_OPT_ERROR)
			return EXIT_USAGE;
		return commands_print_help("help");
	}
	if (argc - optind > 1)
		return ctx_usage(ctx, "give one COMMAND");
	if (argc - optind == 0) {
		commands_usage(stdout);
		return EXIT_OK;
	}
	const struct command *cmd = commands_find(argv[optind]);
	if (cmd == NULL)
		return ctx_usage(ctx, "unknown command '%s'", argv[optind]);
	commands_help(stdout, cmd);
	return EXIT_OK;
}
