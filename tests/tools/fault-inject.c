/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* fault-inject: an LD_PRELOAD library for crash and failure tests.

   It wraps the calls that decide what a crash leaves on disk (writes,
   syncs, renames, unlinks, links, mkdir, rmdir, ftruncate, and opens
   that create or truncate), classifies each one as an event of a kind,
   counts the events per kind and, at the N-th event of a chosen kind,
   kills the process or fails the call. Every counted event can be
   logged as one line, which is what a test's dry run reads to learn
   how many events of each kind an operation makes. It can also record
   every event with its data for a power-loss crash-state tester
   (DLMDB_FI_RECORD, see fault-record.c, which this file includes).

   Built by the test that uses it:
     cc -shared -fPIC -o fault-inject.so fault-inject.c -ldl -pthread

   Configuration (environment, read once when the library is loaded;
   a Dovecot binary started with -k keeps its environment across its
   re-exec through doveconf):

     DLMDB_FI_PROG    act only in the program of this short name
                      (e.g. doveadm); other programs run unaffected
     DLMDB_FI_PREFIX  count only calls on this directory and the files
                      and directories under it
     DLMDB_FI_LOG     append one line per counted event to this file
     DLMDB_FI_KIND    kind whose N-th event is hit: rename unlink mkdir
                      fsync fdatasync commit write ftruncate open link
                      rmdir
     DLMDB_FI_NTH     N (1 = the first event of that kind)
     DLMDB_FI_ACTION  kill        SIGKILL before the call is made
                      kill-after  SIGKILL right after it returned
                      fail        return -1 without making the call
                      skip        (no KIND/NTH) every counted fsync and
                                  fdatasync returns 0 without syncing,
                                  and opens lose O_SYNC/O_DSYNC: a
                                  system that acknowledges before its
                                  data is durable (the crash-state
                                  tester's negative control)
     DLMDB_FI_ERRNO   errno of "fail": EIO (default), ENOSPC, EDQUOT,
                      EROFS, ENOMEM or a number
     DLMDB_FI_MATCH   only events whose path contains this count
                      towards N (all events are still counted and logged)
     DLMDB_FI_RECORD  record every counted event into this directory
                      (fault-record.c)

   Kinds. "commit" is an LMDB commit: the short pwrite() of the tail of
   a meta page (the first two pages) of a file named data.mdb. LMDB
   writes data pages whole (at least a page), so a write under 4096
   bytes there is a meta page. Every other write, pwrite, writev or
   pwritev is "write". rename and renameat(2) are "rename", unlink and
   unlinkat are "unlink", rmdir and unlinkat(AT_REMOVEDIR) are "rmdir",
   link and linkat are "link", mkdir and mkdirat are "mkdir", an open
   or openat with O_CREAT or O_TRUNC (whether it creates or not) is
   "open".

   Log line: "<seq> <kind> <n> <action> <path> [-> <path2>]
   [off=<offset> len=<length>]", where n is the event's number within
   its kind, action is "-" or the action taken, offset is -1 for a
   write at a position this library doesn't know.

   Every wrapper fills a struct fi_event (kind, fd, path, offset,
   length, the data) and calls fi_before() before and fi_after() after
   the real call; the recorder is a consumer in those two. */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* LMDB's largest page size; a meta page is one of the first two pages */
#define FI_META_AREA (2 * 65536)
/* a commit writes only the changed tail of its meta page */
#define FI_META_MAX_WRITE 4096

/* the numbers are the recorder's format (fault-record.c): append only */
enum fi_kind {
	FI_RENAME,
	FI_UNLINK,
	FI_MKDIR,
	FI_FSYNC,
	FI_FDATASYNC,
	FI_COMMIT,
	FI_WRITE,
	FI_FTRUNCATE,
	FI_OPEN,
	FI_LINK,
	FI_RMDIR,

	FI_KIND_COUNT
};

static const char *const fi_kind_names[FI_KIND_COUNT] = {
	"rename", "unlink", "mkdir", "fsync", "fdatasync", "commit",
	"write", "ftruncate", "open", "link", "rmdir"
};

enum fi_action {
	FI_ACTION_NONE,
	FI_ACTION_KILL,
	FI_ACTION_KILL_AFTER,
	FI_ACTION_FAIL,
	FI_ACTION_SKIP
};

struct fi_event {
	enum fi_kind kind;
	int fd;
	char path[PATH_MAX];
	char path2[PATH_MAX];
	/* writes and ftruncate: -1 = unknown */
	off_t offset;
	size_t length;
	/* the data of a write (for the recorder), one of these */
	const void *buf;
	const struct iovec *iov;
	int iovcnt;
	/* pwrite, pwritev: offset is the one given */
	int positional;
	/* open: the flags asked for; whether the file existed before */
	int open_flags;
	int existed;
	/* rename, unlink, link: the file the name pointed to before the
	   call, and a rename's target (0: none) */
	dev_t dev;
	ino_t ino, ino2;
	/* the recorder's global sequence number when the call began */
	uint64_t seq_begin;
	/* counted (under the prefix): the recorder records it */
	int counted;

	enum fi_action action;
};

static struct {
	int initialised;
	int active;
	const char *prefix;
	size_t prefix_len;
	int log_fd;
	int kind;		/* -1: no fault */
	unsigned long nth;
	enum fi_action action;
	int error;
	const char *match;
	int skip_sync;		/* DLMDB_FI_ACTION=skip */

	unsigned long seq;
	unsigned long counts[FI_KIND_COUNT];
	unsigned long hits;
} fi = { .log_fd = -1, .kind = -1 };

static struct {
	int (*rename)(const char *, const char *);
	int (*renameat)(int, const char *, int, const char *);
	int (*renameat2)(int, const char *, int, const char *, unsigned int);
	int (*unlink)(const char *);
	int (*unlinkat)(int, const char *, int);
	int (*rmdir)(const char *);
	int (*link)(const char *, const char *);
	int (*linkat)(int, const char *, int, const char *, int);
	int (*mkdir)(const char *, mode_t);
	int (*mkdirat)(int, const char *, mode_t);
	int (*fsync)(int);
	int (*fdatasync)(int);
	ssize_t (*write)(int, const void *, size_t);
	ssize_t (*pwrite)(int, const void *, size_t, off_t);
	ssize_t (*pwrite64)(int, const void *, size_t, off64_t);
	ssize_t (*writev)(int, const struct iovec *, int);
	ssize_t (*pwritev)(int, const struct iovec *, int, off_t);
	int (*ftruncate)(int, off_t);
	int (*ftruncate64)(int, off64_t);
	int (*openat)(int, const char *, int, ...);
} real;

static void *fi_sym(const char *name)
{
	return dlsym(RTLD_NEXT, name);
}

static void fi_resolve(void)
{
	real.rename = fi_sym("rename");
	real.renameat = fi_sym("renameat");
	real.renameat2 = fi_sym("renameat2");
	real.unlink = fi_sym("unlink");
	real.unlinkat = fi_sym("unlinkat");
	real.rmdir = fi_sym("rmdir");
	real.link = fi_sym("link");
	real.linkat = fi_sym("linkat");
	real.mkdir = fi_sym("mkdir");
	real.mkdirat = fi_sym("mkdirat");
	real.fsync = fi_sym("fsync");
	real.fdatasync = fi_sym("fdatasync");
	real.write = fi_sym("write");
	real.pwrite = fi_sym("pwrite");
	real.pwrite64 = fi_sym("pwrite64");
	real.writev = fi_sym("writev");
	real.pwritev = fi_sym("pwritev");
	real.ftruncate = fi_sym("ftruncate");
	real.ftruncate64 = fi_sym("ftruncate64");
	real.openat = fi_sym("openat");
}

static void fi_die_config(const char *fmt, const char *value)
{
	char msg[512];
	int n;

	n = snprintf(msg, sizeof(msg), "fault-inject: ");
	n += snprintf(msg + n, sizeof(msg) - n, fmt, value);
	n += snprintf(msg + n, sizeof(msg) - n, "\n");
	if (real.write != NULL)
		(void)real.write(STDERR_FILENO, msg, strlen(msg));
	abort();
}

static int fi_parse_errno(const char *s)
{
	static const struct { const char *name; int value; } names[] = {
		{ "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT },
		{ "EROFS", EROFS }, { "ENOMEM", ENOMEM }, { "EACCES", EACCES },
	};
	unsigned int i;
	char *end;
	long v;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i].name) == 0)
			return names[i].value;
	}
	v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v <= 0)
		fi_die_config("bad DLMDB_FI_ERRNO: %s", s);
	return (int)v;
}

/* A copy: the program may reuse the memory of its environment (Dovecot
   writes its process title over it). */
static const char *fi_getenv(const char *name)
{
	const char *v = getenv(name);

	return v == NULL ? NULL : strdup(v);
}

static void fi_record_configure(void);

static void fi_configure(void)
{
	const char *v;
	unsigned int i;

	v = getenv("DLMDB_FI_PROG");
	fi.active = v == NULL || strcmp(program_invocation_short_name, v) == 0;
	if (!fi.active)
		return;
	fi.prefix = fi_getenv("DLMDB_FI_PREFIX");
	if (fi.prefix != NULL) {
		fi.prefix_len = strlen(fi.prefix);
		while (fi.prefix_len > 1 && fi.prefix[fi.prefix_len - 1] == '/')
			fi.prefix_len--;
	}
	fi.match = fi_getenv("DLMDB_FI_MATCH");
	if ((v = getenv("DLMDB_FI_LOG")) != NULL) {
		fi.log_fd = real.openat(AT_FDCWD, v, O_WRONLY | O_APPEND | O_CREAT |
				      O_CLOEXEC, 0666);
		if (fi.log_fd == -1)
			fi_die_config("can't open DLMDB_FI_LOG %s", v);
	}
	fi_record_configure();
	v = getenv("DLMDB_FI_ACTION");
	if (v != NULL && strcmp(v, "skip") == 0) {
		/* not a fault at the N-th event: a property of every sync */
		fi.skip_sync = 1;
		return;
	}
	if ((v = getenv("DLMDB_FI_KIND")) == NULL || *v == '\0')
		return;
	for (i = 0; i < FI_KIND_COUNT; i++) {
		if (strcmp(v, fi_kind_names[i]) == 0)
			fi.kind = i;
	}
	if (fi.kind < 0)
		fi_die_config("unknown DLMDB_FI_KIND: %s", v);
	v = getenv("DLMDB_FI_NTH");
	fi.nth = v == NULL ? 0 : strtoul(v, NULL, 10);
	if (fi.nth == 0)
		fi_die_config("DLMDB_FI_NTH must be 1 or more: %s",
			      v == NULL ? "(unset)" : v);
	v = getenv("DLMDB_FI_ACTION");
	if (v == NULL || strcmp(v, "kill") == 0)
		fi.action = FI_ACTION_KILL;
	else if (strcmp(v, "kill-after") == 0)
		fi.action = FI_ACTION_KILL_AFTER;
	else if (strcmp(v, "fail") == 0)
		fi.action = FI_ACTION_FAIL;
	else
		fi_die_config("unknown DLMDB_FI_ACTION: %s", v);
	v = getenv("DLMDB_FI_ERRNO");
	fi.error = v == NULL ? EIO : fi_parse_errno(v);
}

__attribute__((constructor)) static void fi_init(void)
{
	if (__atomic_exchange_n(&fi.initialised, 1, __ATOMIC_SEQ_CST))
		return;
	fi_resolve();
	fi_configure();
}

/* Calls may come before our constructor ran: another library's
   constructor, or a sanitizer runtime setting itself up (ASan creates its
   log_path directory from inside libstdc++'s constructor). They pass
   through uncounted: configuring needs strcmp() and friends, which such a
   runtime intercepts and cannot run yet (a jump to NULL), and nothing
   before main() touches the user's files. */
static int fi_enabled(void)
{
	if (!__atomic_load_n(&fi.initialised, __ATOMIC_SEQ_CST)) {
		if (real.ftruncate64 == NULL)
			fi_resolve();
		return 0;
	}
	return fi.active;
}

static void fi_path_fd(int fd, char *path, size_t size)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, size - 1);
	if (n < 0)
		n = 0;
	path[n] = '\0';
}

static void fi_path_at(int dirfd, const char *name, char *path, size_t size)
{
	char dir[PATH_MAX];
	int n;

	if (name[0] == '/')
		dir[0] = '\0';
	else if (dirfd == AT_FDCWD) {
		if (getcwd(dir, sizeof(dir)) == NULL)
			dir[0] = '\0';
	} else {
		fi_path_fd(dirfd, dir, sizeof(dir));
	}
	n = snprintf(path, size, "%s%s%s", dir, dir[0] == '\0' ? "" : "/",
		     name);
	if (n < 0 || (size_t)n >= size) {
		/* cut: the path is only matched and logged */
		path[size - 1] = '\0';
	}
}

/* the directory itself, or anything under it */
static int fi_path_counted(const char *path)
{
	if (fi.prefix == NULL)
		return 1;
	if (strncmp(path, fi.prefix, fi.prefix_len) != 0)
		return 0;
	return path[fi.prefix_len] == '\0' || path[fi.prefix_len] == '/' ||
		strcmp(path + fi.prefix_len, " (deleted)") == 0;
}

static int fi_has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int fi_is_commit(const struct fi_event *ev)
{
	/* a file can be written after it was unlinked or renamed over:
	   /proc then shows "<path> (deleted)" */
	return ev->offset >= 0 && ev->offset < FI_META_AREA &&
		ev->length > 0 && ev->length < FI_META_MAX_WRITE &&
		(fi_has_suffix(ev->path, "/data.mdb") ||
		 fi_has_suffix(ev->path, "/data.mdb (deleted)"));
}

static void fi_log(const struct fi_event *ev, unsigned long seq,
		   unsigned long n, const char *action)
{
	char line[2 * PATH_MAX + 128];
	int len;

	if (fi.log_fd == -1)
		return;
	len = snprintf(line, sizeof(line), "%lu %s %lu %s %s", seq,
		       fi_kind_names[ev->kind], n, action, ev->path);
	if (ev->path2[0] != '\0' && len < (int)sizeof(line))
		len += snprintf(line + len, sizeof(line) - len, " -> %s",
				ev->path2);
	if ((ev->kind == FI_WRITE || ev->kind == FI_COMMIT ||
	     ev->kind == FI_FTRUNCATE) && len < (int)sizeof(line)) {
		len += snprintf(line + len, sizeof(line) - len,
				" off=%lld len=%zu", (long long)ev->offset,
				ev->length);
	}
	if (len >= (int)sizeof(line) - 1)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	(void)real.write(fi.log_fd, line, len);
}

static void fi_record_begin(struct fi_event *ev);
static void fi_record_end(struct fi_event *ev, long ret);

static const char *fi_action_name(enum fi_action action)
{
	switch (action) {
	case FI_ACTION_KILL:
		return "kill";
	case FI_ACTION_KILL_AFTER:
		return "kill-after";
	case FI_ACTION_FAIL:
		return "fail";
	case FI_ACTION_SKIP:
		return "skip";
	default:
		return "-";
	}
}

/* Before the real call: count, log, and act. Returns -1 (errno set)
   if the call must fail without being made, 1 if it must be skipped
   (the wrapper returns success without making it). */
static int fi_before(struct fi_event *ev)
{
	unsigned long seq, n;

	if (!fi_path_counted(ev->path))
		return 0;
	ev->counted = 1;
	seq = __atomic_add_fetch(&fi.seq, 1, __ATOMIC_SEQ_CST);
	n = __atomic_add_fetch(&fi.counts[ev->kind], 1, __ATOMIC_SEQ_CST);
	if ((int)ev->kind == fi.kind &&
	    (fi.match == NULL || strstr(ev->path, fi.match) != NULL ||
	     strstr(ev->path2, fi.match) != NULL) &&
	    __atomic_add_fetch(&fi.hits, 1, __ATOMIC_SEQ_CST) == fi.nth)
		ev->action = fi.action;
	else if (fi.skip_sync &&
		 (ev->kind == FI_FSYNC || ev->kind == FI_FDATASYNC))
		ev->action = FI_ACTION_SKIP;
	fi_log(ev, seq, n, fi_action_name(ev->action));
	switch (ev->action) {
	case FI_ACTION_KILL:
		raise(SIGKILL);
		break;
	case FI_ACTION_FAIL:
		errno = fi.error;
		return -1;
	case FI_ACTION_SKIP:
		fi_record_begin(ev);
		fi_record_end(ev, 0);
		return 1;
	default:
		break;
	}
	fi_record_begin(ev);
	return 0;
}

static void fi_after(struct fi_event *ev, long ret)
{
	if (ev->counted)
		fi_record_end(ev, ret);
	if (ev->action == FI_ACTION_KILL_AFTER)
		raise(SIGKILL);
}

static void fi_event_init(struct fi_event *ev, enum fi_kind kind)
{
	ev->kind = kind;
	ev->fd = -1;
	ev->path[0] = '\0';
	ev->path2[0] = '\0';
	ev->offset = -1;
	ev->length = 0;
	ev->buf = NULL;
	ev->iov = NULL;
	ev->iovcnt = 0;
	ev->positional = 0;
	ev->open_flags = 0;
	ev->existed = 0;
	ev->dev = 0;
	ev->ino = 0;
	ev->ino2 = 0;
	ev->seq_begin = 0;
	ev->counted = 0;
	ev->action = FI_ACTION_NONE;
}

static void fi_event_fd(struct fi_event *ev, enum fi_kind kind, int fd)
{
	fi_event_init(ev, kind);
	ev->fd = fd;
	fi_path_fd(fd, ev->path, sizeof(ev->path));
}

/* A write: "commit" if it is an LMDB meta-page write. */
static void fi_event_write(struct fi_event *ev, int fd, off_t offset,
			   size_t length)
{
	fi_event_fd(ev, FI_WRITE, fd);
	ev->positional = offset >= 0;
	ev->offset = offset >= 0 ? offset : lseek(fd, 0, SEEK_CUR);
	ev->length = length;
	if (fi_is_commit(ev))
		ev->kind = FI_COMMIT;
}

/* A call on a name: the file it names before the call (the recorder
   needs it: after an unlink or a rename it is gone) */
static void fi_event_name(struct fi_event *ev, enum fi_kind kind, int dirfd,
			  const char *name)
{
	struct stat st;

	fi_event_init(ev, kind);
	fi_path_at(dirfd, name, ev->path, sizeof(ev->path));
	if (fi_path_counted(ev->path) &&
	    fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		ev->dev = st.st_dev;
		ev->ino = st.st_ino;
	}
}

/* the second name of a rename or link, and what it named before */
static void fi_event_name2(struct fi_event *ev, int dirfd, const char *name)
{
	struct stat st;

	fi_path_at(dirfd, name, ev->path2, sizeof(ev->path2));
	if ((fi_path_counted(ev->path) || fi_path_counted(ev->path2)) &&
	    fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		ev->ino2 = st.st_ino;
}

static size_t fi_iov_length(const struct iovec *iov, int iovcnt)
{
	size_t n = 0;
	int i;

	for (i = 0; i < iovcnt; i++)
		n += iov[i].iov_len;
	return n;
}

#include "fault-record.c"
#include "fault-wrappers.c"
