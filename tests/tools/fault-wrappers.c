/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* fault-wrappers.c: the wrapped calls of fault-inject.c, which includes
   this file. Each one fills a struct fi_event, calls fi_before() (which
   may kill, fail, or for a skipped sync return 1) and fi_after(). */

int rename(const char *oldpath, const char *newpath)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.rename(oldpath, newpath);
	fi_event_name(&ev, FI_RENAME, AT_FDCWD, oldpath);
	fi_event_name2(&ev, AT_FDCWD, newpath);
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.rename(oldpath, newpath);
	fi_after(&ev, ret);
	return ret;
}

int renameat(int olddirfd, const char *oldpath, int newdirfd,
	     const char *newpath)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.renameat(olddirfd, oldpath, newdirfd, newpath);
	fi_event_name(&ev, FI_RENAME, olddirfd, oldpath);
	fi_event_name2(&ev, newdirfd, newpath);
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.renameat(olddirfd, oldpath, newdirfd, newpath);
	fi_after(&ev, ret);
	return ret;
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd,
	      const char *newpath, unsigned int flags)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.renameat2(olddirfd, oldpath, newdirfd, newpath,
				      flags);
	fi_event_name(&ev, FI_RENAME, olddirfd, oldpath);
	fi_event_name2(&ev, newdirfd, newpath);
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
	fi_after(&ev, ret);
	return ret;
}

int unlink(const char *path)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.unlink(path);
	fi_event_name(&ev, FI_UNLINK, AT_FDCWD, path);
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.unlink(path);
	fi_after(&ev, ret);
	return ret;
}

int unlinkat(int dirfd, const char *path, int flags)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.unlinkat(dirfd, path, flags);
	fi_event_name(&ev, (flags & AT_REMOVEDIR) != 0 ? FI_RMDIR : FI_UNLINK,
		      dirfd, path);
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.unlinkat(dirfd, path, flags);
	fi_after(&ev, ret);
	return ret;
}

int rmdir(const char *path)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.rmdir(path);
	fi_event_name(&ev, FI_RMDIR, AT_FDCWD, path);
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.rmdir(path);
	fi_after(&ev, ret);
	return ret;
}

int link(const char *oldpath, const char *newpath)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.link(oldpath, newpath);
	fi_event_name(&ev, FI_LINK, AT_FDCWD, oldpath);
	fi_event_name2(&ev, AT_FDCWD, newpath);
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.link(oldpath, newpath);
	fi_after(&ev, ret);
	return ret;
}

int linkat(int olddirfd, const char *oldpath, int newdirfd,
	   const char *newpath, int flags)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.linkat(olddirfd, oldpath, newdirfd, newpath, flags);
	fi_event_name(&ev, FI_LINK, olddirfd, oldpath);
	fi_event_name2(&ev, newdirfd, newpath);
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.linkat(olddirfd, oldpath, newdirfd, newpath, flags);
	fi_after(&ev, ret);
	return ret;
}

int mkdir(const char *path, mode_t mode)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.mkdir(path, mode);
	fi_event_init(&ev, FI_MKDIR);
	fi_path_at(AT_FDCWD, path, ev.path, sizeof(ev.path));
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.mkdir(path, mode);
	fi_after(&ev, ret);
	return ret;
}

int mkdirat(int dirfd, const char *path, mode_t mode)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.mkdirat(dirfd, path, mode);
	fi_event_init(&ev, FI_MKDIR);
	fi_path_at(dirfd, path, ev.path, sizeof(ev.path));
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.mkdirat(dirfd, path, mode);
	fi_after(&ev, ret);
	return ret;
}

static int fi_sync(int fd, enum fi_kind kind, int (*sync_fn)(int))
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return sync_fn(fd);
	fi_event_fd(&ev, kind, fd);
	ret = fi_before(&ev);
	if (ret != 0)
		return ret < 0 ? -1 : 0;
	ret = sync_fn(fd);
	fi_after(&ev, ret);
	return ret;
}

int fsync(int fd)
{
	return fi_sync(fd, FI_FSYNC, real.fsync);
}

int fdatasync(int fd)
{
	return fi_sync(fd, FI_FDATASYNC, real.fdatasync);
}

ssize_t write(int fd, const void *buf, size_t count)
{
	struct fi_event ev;
	ssize_t ret;

	if (!fi_enabled())
		return real.write(fd, buf, count);
	fi_event_write(&ev, fd, -1, count);
	ev.buf = buf;
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.write(fd, buf, count);
	fi_after(&ev, ret);
	return ret;
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
	struct fi_event ev;
	ssize_t ret;

	if (!fi_enabled())
		return real.pwrite(fd, buf, count, offset);
	fi_event_write(&ev, fd, offset, count);
	ev.buf = buf;
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.pwrite(fd, buf, count, offset);
	fi_after(&ev, ret);
	return ret;
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset)
{
	struct fi_event ev;
	ssize_t ret;

	if (!fi_enabled())
		return real.pwrite64(fd, buf, count, offset);
	fi_event_write(&ev, fd, offset, count);
	ev.buf = buf;
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.pwrite64(fd, buf, count, offset);
	fi_after(&ev, ret);
	return ret;
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
	struct fi_event ev;
	ssize_t ret;

	if (!fi_enabled())
		return real.writev(fd, iov, iovcnt);
	fi_event_write(&ev, fd, -1, fi_iov_length(iov, iovcnt));
	ev.iov = iov;
	ev.iovcnt = iovcnt;
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.writev(fd, iov, iovcnt);
	fi_after(&ev, ret);
	return ret;
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
	struct fi_event ev;
	ssize_t ret;

	if (!fi_enabled())
		return real.pwritev(fd, iov, iovcnt, offset);
	fi_event_write(&ev, fd, offset, fi_iov_length(iov, iovcnt));
	ev.iov = iov;
	ev.iovcnt = iovcnt;
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.pwritev(fd, iov, iovcnt, offset);
	fi_after(&ev, ret);
	return ret;
}

int ftruncate(int fd, off_t length)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.ftruncate(fd, length);
	fi_event_fd(&ev, FI_FTRUNCATE, fd);
	ev.offset = length;
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.ftruncate(fd, length);
	fi_after(&ev, ret);
	return ret;
}

int ftruncate64(int fd, off64_t length)
{
	struct fi_event ev;
	int ret;

	if (!fi_enabled())
		return real.ftruncate64(fd, length);
	fi_event_fd(&ev, FI_FTRUNCATE, fd);
	ev.offset = length;
	if (fi_before(&ev) < 0)
		return -1;
	ret = real.ftruncate64(fd, length);
	fi_after(&ev, ret);
	return ret;
}

/* --- opens: every variant goes to openat(2) --- */

#define FI_OPEN_SYNC_FLAGS (O_SYNC | O_DSYNC)

/* An open that creates or truncates a file is an event ("open"). Under
   DLMDB_FI_ACTION=skip an open loses O_SYNC/O_DSYNC, so that nothing
   the program writes becomes durable by itself. */
static int fi_open(int dirfd, const char *name, int flags, mode_t mode)
{
	struct fi_event ev;
	struct stat st;
	int fd;

	if (!fi_enabled() ||
	    (flags & (O_CREAT | O_TRUNC | FI_OPEN_SYNC_FLAGS)) == 0)
		return real.openat(dirfd, name, flags, mode);
	fi_event_init(&ev, FI_OPEN);
	fi_path_at(dirfd, name, ev.path, sizeof(ev.path));
	if (!fi_path_counted(ev.path))
		return real.openat(dirfd, name, flags, mode);
	if (fi.skip_sync)
		flags &= ~FI_OPEN_SYNC_FLAGS;
	if ((flags & (O_CREAT | O_TRUNC)) == 0)
		return real.openat(dirfd, name, flags, mode);
	ev.open_flags = flags;
	ev.existed = fstatat(dirfd, name, &st, 0) == 0;
	if (fi_before(&ev) < 0)
		return -1;
	fd = real.openat(dirfd, name, flags, mode);
	ev.fd = fd;
	fi_after(&ev, fd);
	return fd;
}

/* the mode argument exists only with O_CREAT or O_TMPFILE */
#define FI_OPEN_MODE(flags, mode) do { \
	va_list ap; \
	(mode) = 0; \
	if (((flags) & O_CREAT) != 0 || \
	    ((flags) & O_TMPFILE) == O_TMPFILE) { \
		va_start(ap, flags); \
		(mode) = va_arg(ap, int); \
		va_end(ap); \
	} \
} while (0)

int open(const char *path, int flags, ...)
{
	mode_t mode;

	FI_OPEN_MODE(flags, mode);
	return fi_open(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	mode_t mode;

	FI_OPEN_MODE(flags, mode);
	return fi_open(AT_FDCWD, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode;

	FI_OPEN_MODE(flags, mode);
	return fi_open(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t mode;

	FI_OPEN_MODE(flags, mode);
	return fi_open(dirfd, path, flags, mode);
}

/* _FORTIFY_SOURCE's checked variants (never with O_CREAT) */
int __open_2(const char *path, int flags)
{
	return fi_open(AT_FDCWD, path, flags, 0);
}

int __open64_2(const char *path, int flags)
{
	return fi_open(AT_FDCWD, path, flags, 0);
}

int __openat_2(int dirfd, const char *path, int flags)
{
	return fi_open(dirfd, path, flags, 0);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	return fi_open(dirfd, path, flags, 0);
}

int creat(const char *path, mode_t mode)
{
	return fi_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

int creat64(const char *path, mode_t mode)
{
	return fi_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}
