/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* The pop3_policy environment (pop3-policy-env*.c) over crafted records.
   One environment is opened with pop3_policy_env_open() at the start
   (opening an LMDB environment costs milliseconds: LMDB allocates and
   clears megabytes per open); each input then replaces its contents with
   plain LMDB calls (any set of the four DBIs, a schema record of any
   version or raw bytes, records with any keys and values, or ones made
   by the plugin's encoders so that some are consistent) and runs what
   an open runs on them, pop3_policy_env_open_dbis() (which creates
   missing DBIs and converts schemas 1 and 2: every version-1 value
   gets its CRC, schema 1 gets the downloads index), then reads
   everything back the way the plugin does. Checked besides "no crash,
   no out-of-bounds read":
   - the open succeeds, unless the schema record is corrupted or newer
     than the module;
   - each iteration reports every record once, either decoded or as an
     error, and never both;
   - after a conversion every message record that decoded as version 1
     (or already as version 2) decodes; without one, exactly those that
     decode as version 2 do: a version-1 value in a schema-3
     environment is damaged;
   - a schema-1 environment gets an index entry for every message record
     that decodes with a download time, under its key, when the key is
     one the plugin writes (any other, up to LMDB's 511 bytes, must not
     fail the conversion: K1, a 505-byte key did), and its value holds
     the CRC of that key;
   - the keep_days pass drops the index entries it reported as stale: a
     second pass reports none;
   - every message record the iteration decoded is found again by its
     GUID (when its key is the GUID's key).

   Input: u8 flags (which DBIs exist, schema record kind, whether the
   encoders' records are written in version 1), the schema version (a
   version-1 record for schemas below 3, as those modules wrote it) or
   raw record, u8 record count, then per record: u8 kind and its fields;
   then keep_days (u16) and now (u32) for the pass. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "hex-binary.h"
#include "unlink-directory.h"
#include "pop3-policy-env.h"
#include "fuzz-common.h"

#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define F_DBI_META 0x01
#define F_DBI_MSGS 0x02
#define F_DBI_UIDLS 0x04
#define F_DBI_DOWNLOADS 0x08
#define F_SCHEMA 0x10
#define F_SCHEMA_RAW 0x20
/* the encoders' records in version 1 (no CRC), as schemas 1-2 had them */
#define F_V1 0x40

enum rec_kind {
	/* any key and value in any DBI */
	REC_RAW = 0,
	/* a message record by the encoder, under its GUID's key, with or
	   without its index entry */
	REC_MSG,
	/* a UIDL reservation by the encoder */
	REC_UIDL,
	/* an index entry by the encoder, for any key */
	REC_DOWNLOAD,
	REC_KIND_COUNT
};

static const char *const dbi_names[] = { "meta", "msgs", "uidls",
					 "downloads" };

static char *fuzz_dir, *fuzz_path;
static struct pop3_policy_env *fuzz_env;

struct iter_ctx {
	unsigned int recs, errors, stale;
	/* the callbacks run in data stack frames of the plugin's own: what
	   they keep goes to a pool */
	pool_t pool;
	ARRAY_TYPE(const_string) guids;
};

static void fuzz_cleanup(void)
{
	const char *error;

	pop3_policy_env_unref(&fuzz_env);
	if (fuzz_dir != NULL &&
	    unlink_directory(fuzz_dir, UNLINK_DIRECTORY_FLAG_RMDIR,
			     &error) < 0)
		i_error("unlink_directory(%s) failed: %s", fuzz_dir, error);
}

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	const char *error;

	fuzz_init();
	fuzz_dir = i_strdup_printf("%s/fuzz-pop3-policy-env.XXXXXX", base);
	if (mkdtemp(fuzz_dir) == NULL)
		i_fatal("mkdtemp(%s) failed: %m", fuzz_dir);
	fuzz_path = i_strdup_printf("%s/%s", fuzz_dir,
				    POP3_POLICY_ENV_FILE_NAME);
	atexit(fuzz_cleanup);
	if (pop3_policy_env_open(fuzz_path, 0600, &fuzz_env, &error) < 0)
		i_fatal("pop3_policy_env_open(%s) failed: %s", fuzz_path, error);
	return 0;
}

/* --- writing the environment --- */

struct downloaded {
	/* the record's key in msgs, as bytes */
	const unsigned char *key;
	size_t key_size;
	uint64_t first_download;
};

enum schema_state {
	SCHEMA_NONE,
	SCHEMA_OLD,
	SCHEMA_CURRENT,
	/* an open must fail: corrupted, or newer than the module */
	SCHEMA_UNUSABLE,
};

struct writer {
	MDB_txn *txn;
	enum schema_state schema;
	uint32_t schema_version;
	bool v1;
	MDB_dbi dbis[4];
	bool have[4];
	/* decodable message records with a download time */
	ARRAY(struct downloaded) downloaded;
	/* records in msgs; of them, decodable as version 2 / as 1 */
	unsigned int msgs, msgs_v2, msgs_v1;
};

/* The version-1 form of a value the encoders wrote: the same fields
   behind a version byte 1, no CRC. */
static void w_to_v1(struct writer *w, buffer_t *buf)
{
	if (!w->v1 || buf->used < 5)
		return;
	buffer_delete(buf, 1, 4);
	buffer_write(buf, 0, "\x01", 1);
}

static void w_put(struct writer *w, unsigned int dbi, const void *key,
		  size_t key_size, const void *value, size_t value_size)
{
	MDB_val k, v;
	int ret;

	if (!w->have[dbi] || key_size == 0 || key_size > 511)
		return;
	k.mv_data = (void *)key;
	k.mv_size = key_size;
	v.mv_data = (void *)value;
	v.mv_size = value_size;
	if ((ret = mdb_put(w->txn, w->dbis[dbi], &k, &v, 0)) != 0)
		i_fatal("mdb_put() failed: %s", mdb_strerror(ret));
}

static const char *fuzz_str(struct fuzz_input *in, size_t max)
{
	const unsigned char *p;
	size_t n = fuzz_slice(in, max, &p);

	return t_strndup(p, n);
}

static void write_record(struct writer *w, struct fuzz_input *in)
{
	struct pop3_policy_msg_record msg;
	struct pop3_policy_uidl_record uidl;
	buffer_t *buf = t_buffer_create(128), *key = t_buffer_create(64);
	const unsigned char *kp, *vp;
	const char *msg_key;
	size_t kn, vn;
	uint8_t kind = fuzz_u8(in);
	unsigned int dbi;

	switch (kind % REC_KIND_COUNT) {
	case REC_RAW:
		dbi = (kind >> 4) % 4;
		kn = fuzz_slice(in, 511, &kp);
		vn = fuzz_slice(in, 4096, &vp);
		w_put(w, dbi, kp, kn, vp, vn);
		break;
	case REC_MSG:
		i_zero(&msg);
		msg.flags = fuzz_u8(in);
		msg.first_download = (kind & 0x10) != 0 ? 0 : fuzz_u32(in);
		msg.uidl = fuzz_str(in, 70);
		msg.guid = fuzz_str(in, 1024);
		if (msg.guid[0] == '\0' || (msg.uidl[0] != '\0' &&
					    !pop3_policy_uidl_is_valid(msg.uidl)))
			break;
		msg_key = pop3_policy_msg_key(msg.guid);
		pop3_policy_msg_record_encode(buf, msg_key, strlen(msg_key),
					      &msg);
		w_to_v1(w, buf);
		w_put(w, 1, msg_key, strlen(msg_key), buf->data, buf->used);
		if (msg.first_download != 0 && (kind & 0x20) == 0) {
			buffer_set_used_size(buf, 0);
			pop3_policy_download_key_encode(key, msg.first_download,
							msg_key);
			pop3_policy_download_value_encode(buf, key->data,
							  key->used);
			w_to_v1(w, buf);
			w_put(w, 3, key->data, key->used, buf->data, buf->used);
		}
		break;
	case REC_UIDL:
		uidl.guid = fuzz_str(in, 1024);
		kn = fuzz_slice(in, 80, &kp);
		if (uidl.guid[0] == '\0')
			break;
		pop3_policy_uidl_record_encode(buf, kp, kn, &uidl);
		w_to_v1(w, buf);
		w_put(w, 2, kp, kn, buf->data, buf->used);
		break;
	case REC_DOWNLOAD:
		msg_key = fuzz_str(in, 511);
		pop3_policy_download_key_encode(key, fuzz_u32(in), msg_key);
		pop3_policy_download_value_encode(buf, key->data, key->used);
		w_to_v1(w, buf);
		w_put(w, 3, key->data, key->used, buf->data, buf->used);
		break;
	}
}

/* What the msgs DBI holds now, for the conversion check. */
static void collect_msgs(struct writer *w)
{
	struct pop3_policy_msg_record rec;
	MDB_cursor *cursor;
	MDB_val key, val;
	buffer_t *v2 = t_buffer_create(128);
	const char *error;
	bool ok;

	if (!w->have[1])
		return;
	if (mdb_cursor_open(w->txn, w->dbis[1], &cursor) != 0)
		i_fatal("mdb_cursor_open() failed");
	while (mdb_cursor_get(cursor, &key, &val, MDB_NEXT) == 0) {
		w->msgs++;
		ok = pop3_policy_msg_record_decode(key.mv_data, key.mv_size,
						   val.mv_data, val.mv_size,
						   &rec, &error);
		if (ok)
			w->msgs_v2++;
		else {
			/* what the conversion would make of it */
			buffer_set_used_size(v2, 0);
			ok = pop3_policy_record_upgrade_v1(
				POP3_POLICY_RECORD_TYPE_MSG, key.mv_data,
				key.mv_size, val.mv_data, val.mv_size, v2,
				&error) &&
				pop3_policy_msg_record_decode(key.mv_data,
					key.mv_size, v2->data, v2->used,
					&rec, &error);
			if (ok)
				w->msgs_v1++;
		}
		if (ok && rec.first_download != 0) {
			struct downloaded *d =
				array_append_space(&w->downloaded);

			d->key = t_malloc_no0(key.mv_size);
			memcpy((void *)d->key, key.mv_data, key.mv_size);
			d->key_size = key.mv_size;
			d->first_download = rec.first_download;
		}
	}
	mdb_cursor_close(cursor);
}

/* What the schema record says, as the environment now holds it (a raw
   record may have replaced the one written first). */
static void read_schema(struct writer *w)
{
	struct pop3_policy_schema_record rec;
	const char *error;
	MDB_val key, val;

	w->schema = SCHEMA_NONE;
	if (!w->have[0])
		return;
	key.mv_data = (void *)"schema";
	key.mv_size = 6;
	if (mdb_get(w->txn, w->dbis[0], &key, &val) != 0)
		return;
	w->schema_version = 0;
	if ((!pop3_policy_schema_record_decode(val.mv_data, val.mv_size, &rec,
					       &error) &&
	     !pop3_policy_schema_record_decode_v1(val.mv_data, val.mv_size,
						  &rec, &error)) ||
	    rec.schema_version > POP3_POLICY_SCHEMA_VERSION)
		w->schema = SCHEMA_UNUSABLE;
	else if ((w->schema_version = rec.schema_version) <
		 POP3_POLICY_SCHEMA_VERSION)
		w->schema = SCHEMA_OLD;
	else
		w->schema = SCHEMA_CURRENT;
}

static void write_env(struct fuzz_input *in, struct writer *w)
{
	struct pop3_policy_schema_record schema;
	uint8_t flags = fuzz_u8(in);
	const unsigned char *p;
	buffer_t *buf = t_buffer_create(32);

	w->v1 = (flags & F_V1) != 0;
	MDB_dbi dbi;
	unsigned int i, n;
	size_t len;
	int ret;

	if ((ret = mdb_txn_begin(fuzz_env->env, NULL, 0, &w->txn)) != 0)
		i_fatal("mdb_txn_begin() failed: %s", mdb_strerror(ret));
	/* a fresh start: the DBIs the last input left are deleted */
	for (i = 0; i < 4; i++) {
		ret = mdb_dbi_open(w->txn, dbi_names[i], 0, &dbi);
		if (ret == 0)
			ret = mdb_drop(w->txn, dbi, 1);
		if (ret != 0 && ret != MDB_NOTFOUND)
			i_fatal("deleting DBI %s failed: %s", dbi_names[i],
				mdb_strerror(ret));
	}
	for (i = 0; i < 4; i++) {
		if ((flags & (1 << i)) == 0)
			continue;
		if ((ret = mdb_dbi_open(w->txn, dbi_names[i], MDB_CREATE,
					&w->dbis[i])) != 0)
			i_fatal("mdb_dbi_open() failed: %s", mdb_strerror(ret));
		w->have[i] = TRUE;
	}
	if ((flags & F_SCHEMA_RAW) != 0) {
		len = fuzz_slice(in, 64, &p);
		buffer_append(buf, p, len);
	} else if ((flags & F_SCHEMA) != 0) {
		schema.schema_version = fuzz_u8(in) % 5;
		schema.created = fuzz_u32(in);
		pop3_policy_schema_record_encode(buf, &schema);
		/* modules of schemas 1 and 2 wrote version 1 */
		if (schema.schema_version < 3) {
			buffer_delete(buf, 1, 4);
			buffer_write(buf, 0, "\x01", 1);
		}
	}
	if (buf->used > 0 || (flags & F_SCHEMA_RAW) != 0)
		w_put(w, 0, "schema", 6, buf->data, buf->used);
	n = fuzz_u8(in) % 48;
	for (i = 0; i < n; i++)
		write_record(w, in);
	collect_msgs(w);
	read_schema(w);
	if ((ret = mdb_txn_commit(w->txn)) != 0)
		i_fatal("mdb_txn_commit() failed: %s", mdb_strerror(ret));
}

/* --- reading it back --- */

static int msg_cb(const struct pop3_policy_msg_record *rec, const char *error,
		  void *context)
{
	struct iter_ctx *ctx = context;

	fuzz_assert((rec == NULL) != (error == NULL));
	if (rec != NULL) {
		const char *guid = p_strdup(ctx->pool, rec->guid);

		/* what the plugin relies on */
		fuzz_assert(rec->guid[0] != '\0');
		ctx->recs++;
		array_push_back(&ctx->guids, &guid);
	} else {
		fuzz_assert(error[0] != '\0');
		ctx->errors++;
		/* "<path>: downloads index entry <time> <key> without its
		   record (dropped)": a key may hold any text, the words of
		   this message too (a damaged entry's error quotes its key) */
		const char *p = strstr(error, ": ");

		if (p != NULL &&
		    strncmp(p, ": downloads index entry ", 24) == 0 &&
		    strlen(error) > 29 &&
		    strcmp(error + strlen(error) - 29,
			   " without its record (dropped)") == 0)
			ctx->stale++;
	}
	return 0;
}

static int uidl_cb(const char *uidl, const struct pop3_policy_uidl_record *rec,
		   const char *error, void *context)
{
	struct iter_ctx *ctx = context;

	fuzz_assert(uidl != NULL);
	fuzz_assert((rec == NULL) != (error == NULL));
	if (rec != NULL)
		ctx->recs++;
	else
		ctx->errors++;
	return 0;
}

static void check_env(struct fuzz_input *in, struct writer *w)
{
	struct pop3_policy_env *env = fuzz_env;
	struct pop3_policy_msg_record rec;
	struct iter_ctx ctx;
	const char *error = NULL, *keyword, *const *guidp;
	unsigned int keep_days = fuzz_u16(in);
	time_t now = fuzz_u32(in);
	uint64_t last_sweep;
	MDB_txn *txn;
	int ret;

	if (pop3_policy_env_open_dbis(env, &error) < 0) {
		/* only a schema record it can't use stops an open: any
		   other failure locks the user out of the policies */
		fuzz_assert(error != NULL && error[0] != '\0');
		if (w->schema != SCHEMA_UNUSABLE)
			fuzz_fail("open failed: %s", error);
		return;
	}
	fuzz_assert(w->schema != SCHEMA_UNUSABLE);

	i_zero(&ctx);
	ctx.pool = fuzz_pool_create();
	p_array_init(&ctx.guids, ctx.pool, 16);
	if (pop3_policy_env_msg_iter(env, msg_cb, &ctx, &error) < 0)
		fuzz_fail("msg iteration failed: %s", error);
	fuzz_assert(ctx.recs + ctx.errors == w->msgs);
	/* converted: every version-1 record that decoded now decodes;
	   not converted: a version-1 record is damaged */
	if (w->schema == SCHEMA_OLD)
		fuzz_assert(ctx.recs == w->msgs_v2 + w->msgs_v1);
	else
		fuzz_assert(ctx.recs == w->msgs_v2);

	if (w->schema == SCHEMA_OLD && w->schema_version < 2) {
		/* the conversion indexed every downloaded message under
		   its key */
		const struct downloaded *d;
		buffer_t *key = t_buffer_create(512);
		MDB_val k, v;

		if (pop3_policy_env_read_begin(env, &txn, &error) < 0)
			fuzz_fail("read_begin failed: %s", error);
		array_foreach(&w->downloaded, d) {
			/* a key the plugin never writes (longer than a
			   GUID key, or with a NUL) is not indexed */
			if (d->key_size > POP3_POLICY_GUID_KEY_MAX_LEN ||
			    memchr(d->key, '\0', d->key_size) != NULL)
				continue;
			buffer_set_used_size(key, 0);
			pop3_policy_download_key_encode(key, d->first_download, "");
			buffer_append(key, d->key, d->key_size);
			k.mv_data = (void *)key->data;
			k.mv_size = key->used;
			if (mdb_get(txn, env->dbi_downloads, &k, &v) != 0) {
				fuzz_fail("schema 1 -> 2: no downloads entry for "
					  "msgs key %s (%zu bytes)",
					  binary_to_hex(d->key, d->key_size),
					  d->key_size);
			}
			fuzz_assert(pop3_policy_download_value_decode(
				k.mv_data, k.mv_size, v.mv_data, v.mv_size,
				&error));
		}
		pop3_policy_env_read_end(env, &txn);
	}

	ctx.recs = 0;
	ctx.errors = ctx.stale = 0;
	if (pop3_policy_env_due_iter(env, keep_days, now, msg_cb, &ctx,
				     &error) < 0)
		fuzz_fail("due iteration failed: %s", error);
	if (ctx.stale > 0) {
		ctx.stale = 0;
		if (pop3_policy_env_due_iter(env, keep_days, now, msg_cb, &ctx,
					     &error) < 0)
			fuzz_fail("due iteration failed: %s", error);
		fuzz_assert(ctx.stale == 0);
	}
	ctx.recs = 0;
	ctx.errors = 0;
	if (pop3_policy_env_uidl_iter(env, uidl_cb, &ctx, &error) < 0)
		fuzz_fail("uidl iteration failed: %s", error);

	if (pop3_policy_env_read_begin(env, &txn, &error) < 0)
		fuzz_fail("read_begin failed: %s", error);
	array_foreach(&ctx.guids, guidp) {
		ret = pop3_policy_env_msg_get(env, txn, *guidp, &rec, &error);
		fuzz_assert(ret >= -1 && ret <= 1);
		if (ret < 0)
			fuzz_assert(error != NULL && error[0] != '\0');
	}
	ret = pop3_policy_env_flag_get(env, txn, &keyword, &error);
	fuzz_assert(ret >= -1 && ret <= 1);
	ret = pop3_policy_env_sweep_get(env, txn, &last_sweep, &error);
	fuzz_assert(ret >= -1 && ret <= 1);
	pop3_policy_env_read_end(env, &txn);
	pool_unref(&ctx.pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in;
	struct writer w;

	fuzz_input_init(&in, data, size);
	T_BEGIN {
		i_zero(&w);
		t_array_init(&w.downloaded, 8);
		write_env(&in, &w);
		check_env(&in, &w);
	} T_END;
	return 0;
}
