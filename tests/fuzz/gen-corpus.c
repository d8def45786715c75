/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Writes the seed corpus (tests/fuzz/corpus/<target>/) with the
   project's own encoders and storage code: small, real records in each
   target's input format, and data.mdb files of environments made by
   lmdb_env_open(), the body writer and the link, mailbox, uidls and
   quarantine code. Deterministic for a given tree (fixed times and
   contents), so that running it again changes files only when a format
   changed. Run by "tests/fuzz/fuzz corpus". */

#include "lib.h"
#include "buffer.h"
#include "ioloop.h"
#include "unlink-directory.h"
#include "write-full.h"
#include "lmdb-records.h"
#include "lmdb-env.h"
#include "lmdb-body.h"
#include "lmdb-link.h"
#include "lmdb-uidls.h"
#include "lmdb-quarantine.h"
#include "gen-corpus.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

const char *corpus_dir;
const guid_128_t inbox_guid = {
	0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
	0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01
};
const guid_128_t archive_guid = {
	0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8,
	0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, 0xb0
};

void seed(const char *target, const char *name, const void *data,
		 size_t size)
{
	const char *dir = t_strdup_printf("%s/%s", corpus_dir, target);
	const char *path = t_strdup_printf("%s/%s", dir, name);
	int fd;

	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		i_fatal("mkdir(%s) failed: %m", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd == -1 || write_full(fd, data, size) < 0)
		i_fatal("writing %s failed: %m", path);
	i_close_fd(&fd);
}

void seed_str(const char *target, const char *name, const char *str)
{
	seed(target, name, str, strlen(str));
}

void seed_buf(const char *target, const char *name, const buffer_t *buf)
{
	seed(target, name, buf->data, buf->used);
}

void put_u16(buffer_t *buf, uint16_t v)
{
	buffer_append_c(buf, v >> 8);
	buffer_append_c(buf, v & 0xff);
}

void put_u32(buffer_t *buf, uint32_t v)
{
	put_u16(buf, v >> 16);
	put_u16(buf, v & 0xffff);
}

void put_slice(buffer_t *buf, const void *data, size_t size)
{
	put_u16(buf, size);
	buffer_append(buf, data, size);
}

void put_str(buffer_t *buf, const char *str)
{
	put_slice(buf, str, strlen(str));
}

void check(bool ok, const char *error)
{
	if (!ok)
		i_fatal("encoding a seed failed: %s", error);
}

/* --- data.mdb files --- */

struct env_fill {
	uint64_t body_ids[8];
	unsigned int links, quarantine, delete_from, delete_to;
};

static int fill_txn(MDB_txn *txn, void *context, const char **error_r);

static struct lmdb_env *env_open(const char *dir)
{
	struct lmdb_env_settings set;
	struct lmdb_env *env;
	const char *error;

	i_zero(&set);
	set.map_size_initial = 4 * 1024 * 1024;
	set.map_size_max = 64 * 1024 * 1024;
	set.map_reserve = 1024 * 1024;
	set.max_readers = 16;
	set.no_sync = TRUE;
	set.mode = 0600;
	if (lmdb_env_open(dir, &set, &env, &error) < 0)
		i_fatal("lmdb_env_open(%s) failed: %s", dir, error);
	return env;
}

static uint64_t write_body(struct lmdb_env *env, size_t size, unsigned int n)
{
	struct lmdb_body_writer *writer = lmdb_body_writer_init(env);
	struct lmdb_body_info info;
	unsigned char *data = t_malloc_no0(size + 1);
	uint64_t body_id, psize, vsize;
	const char *error;
	size_t i;

	for (i = 0; i < size; i++)
		data[i] = i % 61 == 60 ? '\n' : 'a' + (i + n) % 26;
	i_zero(&info);
	info.guid = t_strdup_printf("seed-%u", n);
	info.received_date = NOW - n;
	info.save_date = NOW;
	memcpy(info.orig_mailbox_guid, inbox_guid, GUID_128_SIZE);
	if (lmdb_body_writer_append(writer, data, size, &error) < 0 ||
	    lmdb_body_writer_finish(writer, &info, &body_id, &psize, &vsize,
				    &error) < 0)
		i_fatal("writing a body failed: %s", error);
	lmdb_body_writer_free(&writer);
	return body_id;
}

static struct lmdb_env *fill_env;

static int fill_txn(MDB_txn *txn, void *context, const char **error_r)
{
	static const char *const keywords[] = { "$Forwarded", "NonJunk" };
	struct env_fill *fill = context;
	struct lmdb_env *env = fill_env;
	struct lmdb_mailbox_record mbox;
	struct lmdb_link_record rec;
	unsigned char key[LMDB_LINK_KEY_SIZE];
	unsigned int i;
	int ret;

	i_zero(&mbox);
	mbox.uid_validity = NOW;
	mbox.highest_uid = fill->links;
	mbox.created = NOW;
	mbox.hierarchy_sep = '/';
	mbox.name = "INBOX";
	if ((ret = lmdb_mailbox_put(env, txn, inbox_guid, &mbox, error_r)) != 0)
		return ret;
	mbox.name = "Archive/\xc3\x84pfel";
	mbox.highest_uid = 0;
	if ((ret = lmdb_mailbox_put(env, txn, archive_guid, &mbox,
				    error_r)) != 0)
		return ret;
	for (i = 1; i <= fill->links; i++) {
		i_zero(&rec);
		rec.body_id = fill->body_ids[i % 3];
		rec.save_date = NOW;
		rec.flags = i % 32;
		rec.pop3_order = i;
		rec.modseq = i;
		rec.pop3_uidl = t_strdup_printf("UID%u.%u", i, NOW);
		rec.keywords = keywords;
		rec.keywords_count = i % 3;
		if ((ret = lmdb_link_add(env, txn, inbox_guid, i, &rec,
					 error_r)) != 0 ||
		    (ret = lmdb_body_ref(env, txn, rec.body_id, 1, NOW, NULL,
					 error_r)) != 0 ||
		    (ret = lmdb_uidls_set(env, txn, inbox_guid, rec.pop3_uidl,
					  i, error_r)) != 0)
			return ret;
	}
	for (i = 0; i < fill->quarantine; i++) {
		lmdb_link_key_encode(inbox_guid, 1 + i, key);
		if ((ret = lmdb_quarantine_move(env, txn, env->dbi_links,
						"links", key, sizeof(key),
						"seed", NOW, error_r)) != 0)
			return ret;
	}
	return 0;
}

static int delete_txn(MDB_txn *txn, void *context, const char **error_r)
{
	struct env_fill *fill = context;
	unsigned int i;
	int ret;

	for (i = fill->delete_from; i < fill->delete_to; i++) {
		if ((ret = lmdb_link_delete(fill_env, txn, inbox_guid, i,
					    error_r)) != 0 && ret != MDB_NOTFOUND)
			return ret;
	}
	return 0;
}

/* compact: the file as mdb_env_copy2(MDB_CP_COMPACT) writes it (no free
   pages, no old page versions): fewer pages for the fuzzer to read */
static void seed_env(const char *name, unsigned int links,
		     unsigned int delete_to, bool compact)
{
	char dir[] = "/tmp/gen-corpus.XXXXXX";
	const char *copy_dir;
	struct env_fill fill;
	struct lmdb_env *env;
	const char *error, *path;
	buffer_t *data;
	struct stat st;
	int fd;

	if (mkdtemp(dir) == NULL)
		i_fatal("mkdtemp() failed: %m");
	env = env_open(dir);
	i_zero(&fill);
	if (links > 0) {
		fill.body_ids[0] = write_body(env, 200, 0);
		fill.body_ids[1] = write_body(env, 5000, 1);
		fill.body_ids[2] = write_body(env, 0, 2);
		/* stays pending: a gc entry */
		(void)write_body(env, 30, 3);
		fill.links = links;
		fill.quarantine = 1;
		fill_env = env;
		if (lmdb_env_write(env, fill_txn, &fill, TRUE, &error) != 0)
			i_fatal("filling %s failed: %s", dir, error);
		if (delete_to > 0) {
			/* frees pages: the free list has entries */
			fill.delete_from = 2;
			fill.delete_to = delete_to;
			if (lmdb_env_write(env, delete_txn, &fill, TRUE,
					   &error) != 0)
				i_fatal("deleting in %s failed: %s", dir, error);
		}
	}
	copy_dir = t_strdup_printf("%s/copy", dir);
	if (compact) {
		if (mkdir(copy_dir, 0700) < 0)
			i_fatal("mkdir(%s) failed: %m", copy_dir);
		if (mdb_env_copy2(env->env, copy_dir, MDB_CP_COMPACT) != 0)
			i_fatal("mdb_env_copy2(%s) failed", copy_dir);
	}
	lmdb_env_unref(&env);
	lmdb_env_deinit();

	path = t_strdup_printf("%s/data.mdb", compact ? copy_dir : dir);
	fd = open(path, O_RDONLY);
	if (fd == -1 || fstat(fd, &st) < 0)
		i_fatal("open(%s) failed: %m", path);
	data = t_buffer_create(st.st_size);
	if (read(fd, buffer_append_space_unsafe(data, st.st_size),
		 st.st_size) != st.st_size)
		i_fatal("read(%s) failed", path);
	i_close_fd(&fd);
	seed_buf("lmdb-pagescan", name, data);
	if (unlink_directory(dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0)
		i_fatal("unlink_directory(%s) failed: %s", dir, error);
}
int main(int argc, char *argv[])
{
	lib_init();
	if (argc != 2)
		i_fatal("Usage: gen-corpus <corpus dir>");
	corpus_dir = argv[1];
	ioloop_time = NOW;
	ioloop_timeval.tv_sec = NOW;
	T_BEGIN {
		gen_corpus_records();
		gen_corpus_pop3_policy();
		seed_env("empty.mdb", 0, 0, FALSE);
		seed_env("small.mdb", 6, 0, TRUE);
		seed_env("branches.mdb", 80, 0, TRUE);
		seed_env("freelist.mdb", 80, 60, FALSE);
	} T_END;
	lib_deinit();
	return 0;
}
