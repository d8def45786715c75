/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* fault-record.c: the recorder of fault-inject.c, which includes this
   file (its users build the library with one compile command).

   With DLMDB_FI_RECORD=<dir>, every counted event (a call under
   DLMDB_FI_PREFIX, see fault-inject.c) that succeeded is appended to a
   record file of the process, <dir>/p<pid>-<n>.rec, with the data of
   each write, so that a crash-state tester (tests/crashstate) can build
   the files a power loss could leave at any point of the run.

   Global order: <dir>/seq holds a 64-bit counter that every process
   maps shared and increments atomically. A call takes a number when it
   begins (seq_begin) and one when it has returned (seq_end); a marker
   (fi_record_mark(), which the test driver calls through ctypes when a
   server acknowledged something) takes one. If a.seq_end < b.seq_begin
   then call a had returned before call b began, whatever processes made
   them; that is all the tester relies on (an fsync covers the writes to
   its file that returned before it began).

   A record file starts with "FIREC001", the size of an entry (uint32)
   and the pid (uint32); then entries: struct fi_rec_entry (packed,
   little endian), the path, the second path, the data. Paths are as the
   process saw them (absolute, "<path> (deleted)" for a file written
   after its last name went), without a terminating NUL.

     write, commit   offset = where the bytes went (an O_APPEND write:
                     the end of file after it minus its length), the
                     data = the bytes written (the return value's worth)
     ftruncate       offset = the new size
     fsync,
     fdatasync       the file's dev/ino; FI_REC_DIR for a directory;
                     FI_REC_SKIPPED if DLMDB_FI_ACTION=skip made it a
                     no-op (then it is no barrier)
     open            only opens that created (FI_REC_CREATED) or
                     truncated (FI_REC_TRUNCATED, offset 0) a file
     rename          ino = the file renamed, ino2 = the file path2
                     named before (0: none)
     unlink, rmdir   ino = the file the name pointed to
     link            path = the existing name, path2 = the new one
     mkdir           ino = the new directory
     mark            path = the driver's text

   Every write of a file descriptor opened O_DSYNC or O_SYNC carries
   FI_REC_DSYNC: it is durable when it returns (LMDB writes a synced
   commit's meta page that way). */

#define FI_REC_MAGIC 0x31524946		/* "FIR1" */
#define FI_REC_KIND_MARK 100
#define FI_REC_HIGH_FD 700

enum fi_rec_flags {
	FI_REC_DSYNC = 0x01,
	FI_REC_APPEND = 0x02,
	FI_REC_SKIPPED = 0x04,
	FI_REC_CREATED = 0x08,
	FI_REC_TRUNCATED = 0x10,
	FI_REC_DIR = 0x20
};

struct fi_rec_entry {
	uint32_t magic;
	uint16_t kind;
	uint16_t flags;
	uint64_t seq_begin;
	uint64_t seq_end;
	uint32_t pid;
	uint32_t tid;
	uint64_t dev;
	uint64_t ino;
	uint64_t ino2;
	int64_t offset;
	int64_t result;
	uint32_t mode;
	uint32_t path_len;
	uint32_t path2_len;
	uint32_t reserved;
	uint64_t data_len;
} __attribute__((packed));

static struct {
	const char *dir;
	pthread_mutex_t lock;
	/* the process the record file belongs to (a fork gets its own) */
	pid_t pid;
	int fd;
	uint64_t *seq;
} fi_rec = { .lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1 };

static void fi_record_die(const char *what)
{
	char msg[PATH_MAX + 128];

	snprintf(msg, sizeof(msg), "fault-inject: recorder: %s (%s): %s\n",
		 what, fi_rec.dir, strerror(errno));
	(void)real.write(STDERR_FILENO, msg, strlen(msg));
	abort();
}

/* The counter is mapped once; a fork shares the mapping. */
static void fi_record_configure(void)
{
	char path[PATH_MAX];
	void *map;
	int fd;

	fi_rec.dir = fi_getenv("DLMDB_FI_RECORD");
	if (fi_rec.dir == NULL)
		return;
	snprintf(path, sizeof(path), "%s/seq", fi_rec.dir);
	fd = real.openat(AT_FDCWD, path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (fd == -1)
		fi_record_die("open seq");
	if (real.ftruncate(fd, 4096) < 0)
		fi_record_die("ftruncate seq");
	map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		fi_record_die("mmap seq");
	close(fd);
	fi_rec.seq = map;
}

static uint64_t fi_record_next_seq(void)
{
	return __atomic_add_fetch(fi_rec.seq, 1, __ATOMIC_SEQ_CST);
}

/* lock held */
static void fi_record_open(void)
{
	struct { char magic[8]; uint32_t entry_size, pid; } hdr = {
		"FIREC001", sizeof(struct fi_rec_entry), 0
	};
	char path[PATH_MAX];
	unsigned int n;
	int fd = -1, high;

	fi_rec.pid = getpid();
	hdr.pid = fi_rec.pid;
	for (n = 0; fd == -1 && n < 1000; n++) {
		snprintf(path, sizeof(path), "%s/p%d-%u.rec", fi_rec.dir,
			 (int)fi_rec.pid, n);
		fd = real.openat(AT_FDCWD, path, O_WRONLY | O_CREAT | O_EXCL |
				 O_APPEND | O_CLOEXEC, 0644);
		if (fd == -1 && errno != EEXIST)
			break;
	}
	if (fd == -1)
		fi_record_die("create a record file");
	/* out of the way of programs that arrange their low descriptors */
	high = fcntl(fd, F_DUPFD_CLOEXEC, FI_REC_HIGH_FD);
	if (high != -1) {
		close(fd);
		fd = high;
	}
	if (real.write(fd, &hdr, sizeof(hdr)) != sizeof(hdr))
		fi_record_die("write a record file header");
	fi_rec.fd = fd;
}

static void fi_record_write_all(struct iovec *iov, int iovcnt)
{
	ssize_t n;

	while (iovcnt > 0) {
		n = real.writev(fi_rec.fd, iov, iovcnt > IOV_MAX ?
				IOV_MAX : iovcnt);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fi_record_die("write the record");
		while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
			n -= iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= n;
		}
	}
}

/* Append an entry; data is buf, or the first data_len bytes of iov. */
static void fi_record_append(struct fi_rec_entry *e, const char *path,
			     const char *path2, const void *buf,
			     const struct iovec *src_iov, int src_iovcnt)
{
	struct iovec iov_stack[72], *iov = iov_stack;
	uint64_t left = e->data_len;
	int n = 0, i;

	e->magic = FI_REC_MAGIC;
	e->pid = getpid();
	e->tid = syscall(SYS_gettid);
	e->path_len = strlen(path);
	e->path2_len = strlen(path2);
	if (src_iovcnt > 69) {
		iov = malloc(sizeof(*iov) * (src_iovcnt + 3));
		if (iov == NULL)
			fi_record_die("malloc");
	}
	iov[n].iov_base = e;
	iov[n++].iov_len = sizeof(*e);
	iov[n].iov_base = (void *)path;
	iov[n++].iov_len = e->path_len;
	iov[n].iov_base = (void *)path2;
	iov[n++].iov_len = e->path2_len;
	if (buf != NULL && left > 0) {
		iov[n].iov_base = (void *)buf;
		iov[n++].iov_len = left;
	}
	for (i = 0; src_iov != NULL && i < src_iovcnt && left > 0; i++) {
		iov[n].iov_base = src_iov[i].iov_base;
		iov[n].iov_len = src_iov[i].iov_len < left ?
			src_iov[i].iov_len : left;
		left -= iov[n++].iov_len;
	}
	pthread_mutex_lock(&fi_rec.lock);
	if (fi_rec.fd == -1 || fi_rec.pid != getpid())
		fi_record_open();
	fi_record_write_all(iov, n);
	pthread_mutex_unlock(&fi_rec.lock);
	if (iov != iov_stack)
		free(iov);
}

static void fi_record_begin(struct fi_event *ev)
{
	if (fi_rec.seq != NULL)
		ev->seq_begin = fi_record_next_seq();
}

static void fi_record_stat(struct fi_rec_entry *e, const struct stat *st)
{
	e->dev = st->st_dev;
	e->ino = st->st_ino;
	e->mode = st->st_mode;
	if (S_ISDIR(st->st_mode))
		e->flags |= FI_REC_DIR;
}

/* where a write that returned ret bytes went */
static int64_t fi_record_write_offset(const struct fi_event *ev, long ret,
				      int fl, const struct stat *st)
{
	/* O_APPEND: Linux appends even a pwrite() at the end of file;
	   writers of such files (Dovecot's transaction logs) hold a lock,
	   so nobody appended between the write and the fstat() */
	if ((fl & O_APPEND) != 0)
		return (int64_t)st->st_size - ret;
	if (ev->positional)
		return ev->offset;
	return (int64_t)lseek(ev->fd, 0, SEEK_CUR) - ret;
}

static void fi_record_end(struct fi_event *ev, long ret)
{
	struct fi_rec_entry e;
	struct stat st;
	int fl;

	if (fi_rec.seq == NULL || ret < 0)
		return;
	memset(&e, 0, sizeof(e));
	e.kind = ev->kind;
	e.seq_begin = ev->seq_begin;
	e.seq_end = fi_record_next_seq();
	e.result = ret;
	e.offset = -1;
	switch (ev->kind) {
	case FI_WRITE:
	case FI_COMMIT:
		if (fstat(ev->fd, &st) < 0)
			fi_record_die("fstat a written file");
		fi_record_stat(&e, &st);
		fl = fcntl(ev->fd, F_GETFL);
		if ((fl & (O_DSYNC | O_SYNC)) != 0)
			e.flags |= FI_REC_DSYNC;
		if ((fl & O_APPEND) != 0)
			e.flags |= FI_REC_APPEND;
		e.offset = fi_record_write_offset(ev, ret, fl, &st);
		e.data_len = ret;
		fi_record_append(&e, ev->path, "", ev->buf, ev->iov,
				 ev->iovcnt);
		return;
	case FI_FSYNC:
	case FI_FDATASYNC:
	case FI_FTRUNCATE:
		if (fstat(ev->fd, &st) < 0)
			fi_record_die("fstat a synced or truncated file");
		fi_record_stat(&e, &st);
		if (ev->action == FI_ACTION_SKIP)
			e.flags |= FI_REC_SKIPPED;
		if (ev->kind == FI_FTRUNCATE)
			e.offset = ev->offset;
		break;
	case FI_OPEN:
		if (fstat((int)ret, &st) < 0)
			fi_record_die("fstat an opened file");
		fi_record_stat(&e, &st);
		if (!ev->existed)
			e.flags |= FI_REC_CREATED;
		else if ((ev->open_flags & O_TRUNC) != 0 &&
			 (ev->open_flags & O_ACCMODE) != O_RDONLY) {
			e.flags |= FI_REC_TRUNCATED;
			e.offset = 0;
		} else {
			/* an existing file opened: nothing changed */
			return;
		}
		break;
	case FI_MKDIR:
		if (stat(ev->path, &st) == 0)
			fi_record_stat(&e, &st);
		break;
	default:
		/* rename, unlink, link, rmdir: what the name was before */
		e.dev = ev->dev;
		e.ino = ev->ino;
		e.ino2 = ev->ino2;
		break;
	}
	fi_record_append(&e, ev->path, ev->path2, NULL, NULL, 0);
}

/* For the test driver (ctypes): a marker in the global order, e.g.
   "ack 17" once a server acknowledged operation 17. Returns its
   sequence number, 0 without DLMDB_FI_RECORD. */
__attribute__((visibility("default")))
uint64_t fi_record_mark(const char *text)
{
	struct fi_rec_entry e;

	if (!fi_enabled() || fi_rec.seq == NULL)
		return 0;
	memset(&e, 0, sizeof(e));
	e.kind = FI_REC_KIND_MARK;
	e.seq_begin = e.seq_end = fi_record_next_seq();
	e.offset = -1;
	fi_record_append(&e, text, "", NULL, NULL, 0);
	return e.seq_end;
}
