/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "str.h"
#include "sort.h"
#include "doveadm-lmdb-salvage.h"

#include <stdio.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

/* The salvage's file work: which processes have the environment open
   (steps 2-3 of doveadm-lmdb-salvage.c), and the swap (step 5). */

/* --- other processes --- */

/* Processes holding a lock on lock.mdb: LMDB keeps a read lock on its
   first byte for as long as a process has the environment open. Read
   from /proc/locks, which needs no rights over those processes (the
   command runs as the mail user, and mail processes are not
   dumpable). */
static void lmdb_salvage_lock_holders(const char *lock_path,
				      ARRAY_TYPE(uint32_t) *pids)
{
	struct stat st;
	char line[512], type[32], mode[32], rw[32], devino[64];
	unsigned int maj, min;
	unsigned long long ino;
	int pid, n;
	FILE *f;

	if (stat(lock_path, &st) < 0)
		return;
	f = fopen("/proc/locks", "r");
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		const char *p = strchr(line, ':');

		if (p == NULL)
			continue;
		p++;
		while (*p == ' ')
			p++;
		/* a blocked waiter: "-> POSIX ..." */
		if (p[0] == '-' && p[1] == '>')
			p += 2;
		n = sscanf(p, "%31s %31s %31s %d %63s", type, mode, rw, &pid,
			   devino);
		if (n != 5 || sscanf(devino, "%x:%x:%llu", &maj, &min,
				     &ino) != 3)
			continue;
		/* an anonymous device (btrfs, overlay) may be reported
		   differently than stat() does: the inode decides then */
		if (ino != (unsigned long long)st.st_ino ||
		    (maj != 0 && (maj != major(st.st_dev) ||
				  min != minor(st.st_dev))))
			continue;
		if (pid > 0 && pid != getpid())
			array_push_back(pids, (uint32_t *)&pid);
	}
	fclose(f);
}

/* Processes with data.mdb itself open, where /proc lets us see them. */
static void lmdb_salvage_fd_holders(const char *data_path,
				    ARRAY_TYPE(uint32_t) *pids)
{
	struct stat st, fd_st;
	struct dirent *d, *fd_d;
	DIR *proc, *fds;
	const char *fd_dir;
	uint32_t pid;

	if (stat(data_path, &st) < 0 || (proc = opendir("/proc")) == NULL)
		return;
	while ((d = readdir(proc)) != NULL) {
		if (str_to_uint32(d->d_name, &pid) < 0 ||
		    pid == (uint32_t)getpid())
			continue;
		fd_dir = t_strdup_printf("/proc/%u/fd", pid);
		if ((fds = opendir(fd_dir)) == NULL)
			continue;
		while ((fd_d = readdir(fds)) != NULL) {
			if (fd_d->d_name[0] == '.')
				continue;
			if (stat(t_strdup_printf("%s/%s", fd_dir,
						 fd_d->d_name), &fd_st) == 0 &&
			    fd_st.st_dev == st.st_dev &&
			    fd_st.st_ino == st.st_ino) {
				array_push_back(pids, &pid);
				break;
			}
		}
		(void)closedir(fds);
	}
	(void)closedir(proc);
}

const char *lmdb_salvage_holders(const char *root)
{
	ARRAY_TYPE(uint32_t) pids;
	string_t *str = t_str_new(64);
	const uint32_t *pidp;
	uint32_t last = 0;

	t_array_init(&pids, 8);
	lmdb_salvage_lock_holders(t_strconcat(root, "/lock.mdb", NULL), &pids);
	lmdb_salvage_fd_holders(t_strconcat(root, "/data.mdb", NULL), &pids);
	array_sort(&pids, uint32_cmp);
	array_foreach(&pids, pidp) {
		if (*pidp == last)
			continue;
		last = *pidp;
		if (str_len(str) > 0)
			str_append(str, ", ");
		str_printfa(str, "%u", *pidp);
	}
	return str_len(str) == 0 ? NULL : str_c(str);
}

/* --- the swap --- */

/* Put the new data.mdb in place; the damaged one stays as
   data.mdb.damaged-<time> (*aside_r). */
int lmdb_salvage_swap(const char *root, const char *dest,
		      const char **aside_r, const char **error_r)
{
	const char *data_path = t_strconcat(root, "/data.mdb", NULL);
	const char *lock_path = t_strconcat(root, "/lock.mdb", NULL);
	const char *new_path = t_strconcat(dest, "/data.mdb", NULL);
	const char *suffix, *aside, *lock_aside;
	struct stat st;
	unsigned int n;

	suffix = t_strdup_printf("damaged-%ld", (long)ioloop_time);
	for (n = 2;; n++) {
		aside = t_strdup_printf("%s.%s", data_path, suffix);
		if (stat(aside, &st) < 0 && errno == ENOENT)
			break;
		suffix = t_strdup_printf("damaged-%ld-%u", (long)ioloop_time, n);
	}
	lock_aside = t_strdup_printf("%s.%s", lock_path, suffix);
	/* a second name first: data.mdb never ceases to exist, so no
	   process can meet a missing file and create an empty one */
	if (link(data_path, aside) < 0) {
		*error_r = t_strdup_printf("link(%s, %s) failed: %m",
					   data_path, aside);
		return -1;
	}
	/* the lock file belongs to the damaged file's transactions */
	if (rename(lock_path, lock_aside) < 0 && errno != ENOENT) {
		*error_r = t_strdup_printf("rename(%s, %s) failed: %m",
					   lock_path, lock_aside);
		i_unlink(aside);
		return -1;
	}
	if (rename(new_path, data_path) < 0) {
		*error_r = t_strdup_printf("rename(%s, %s) failed: %m",
					   new_path, data_path);
		if (rename(lock_aside, lock_path) < 0 && errno != ENOENT)
			i_error("rename(%s, %s) failed: %m", lock_aside,
				lock_path);
		i_unlink(aside);
		return -1;
	}
	*aside_r = aside;
	if (lmdb_env_fsync_path(root, error_r) < 0) {
		*error_r = t_strdup_printf("%s (the salvaged file is in "
			"place, but until the directory reaches the disk a "
			"power loss can bring back the damaged one)", *error_r);
		return -1;
	}
	return 0;
}
