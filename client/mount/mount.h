/* A mirrorplane namespace as a FUSE file system (libfuse3, low-level API).
 *
 * FUSE inode numbers are the namespace's own (stable u64), except that the
 * namespace root is always FUSE_ROOT_ID. The mount keeps a table of the
 * inodes the kernel knows (ino -> path, with lookup counts dropped by
 * forget), reads the version a file had at open through a reader
 * (reader.h: windows fetched ahead by a pool of threads), and stages writes in a local file that
 * flush/fsync/release upload with mp_put_file (close-to-open, as NFS).
 *
 * Lifecycle: mount_new mounts (no client yet, so the process may still
 * fork: see mount_daemonize), mount_run serves until unmounted or a
 * SIGTERM/SIGINT/SIGHUP, mount_free unmounts and frees. */
#ifndef MP_MOUNT_H
#define MP_MOUNT_H

#include <stdbool.h>

#include <mirrorplane/mirrorplane.h>

struct mount_options {
	bool read_only;
	bool allow_other;
	double entry_timeout;    /* seconds the kernel may keep a name -> inode */
	double attr_timeout;     /* seconds the kernel may keep attributes */
	double poll_interval;    /* seconds between checks for remote changes; 0: none */
	const char *staging_dir; /* where written files are staged (default $TMPDIR, /tmp) */
};

struct mount;

/* Mounts at mountpoint. *ret is the caller's, freed by mount_free. On error
 * err->message says why. */
int mount_new(const char *mountpoint, const struct mount_options *o, struct mount **ret,
              mp_error *err);
/* Forks into the background (the parent exits once the child runs); the
 * child's stdout and stderr go to log_path. */
int mount_daemonize(struct mount *m, const char *log_path, mp_error *err);
/* Serves requests with client c (the caller's; it must outlive the call)
 * until the file system is unmounted or a signal asks to stop. */
int mount_run(struct mount *m, mp_client *c, mp_error *err);
/* Unmounts (if still mounted) and frees. NULL-safe. */
void mount_free(struct mount *m);

#endif
