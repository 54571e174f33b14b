/* File-system paths the daemons create. */
#ifndef MP_PATHS_H
#define MP_PATHS_H

/* mkdir -p with mode 0700 for what it creates. Returns 0 or -errno. */
int paths_mkdirs(const char *dir);

#endif
