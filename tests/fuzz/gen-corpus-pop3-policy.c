/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Seeds of the pop3_policy targets, by the plugin's encoders. */

#include "lib.h"
#include "buffer.h"
#include "pop3-policy-records.h"
#include "gen-corpus.h"

/* --- pop3_policy --- */

/* A seed of the records target for one value: what, mode, key slice;
   the value follows */
static void seed_value_start(buffer_t *buf, uint8_t what, uint8_t mode,
			     const char *key)
{
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, what);
	buffer_append_c(buf, mode);
	put_str(buf, key);
}

/* The value at offset in buf, as the module before schema 3 wrote it:
   version 1, no CRC */
static void to_v1(buffer_t *buf, size_t offset)
{
	buffer_delete(buf, offset + 1, 4);
	buffer_write(buf, offset, "\x01", 1);
}

void gen_corpus_pop3_policy(void)
{
	struct pop3_policy_msg_record msg;
	struct pop3_policy_uidl_record uidl;
	struct pop3_policy_schema_record schema;
	struct pop3_policy_flag_record flag;
	struct pop3_policy_sweep_record sweep;
	buffer_t *buf = t_buffer_create(256), *key;
	char long_guid[600];
	size_t offset;

	/* 0-6: what, mode (sealed), key, value */
	i_zero(&msg);
	msg.flags = POP3_POLICY_MSG_FLAG_HIDDEN;
	msg.first_download = NOW;
	msg.uidl = "00000001.1700000000";
	msg.guid = "3c1b7a7e0f3e2b6559d30000a1b2c3d4";
	seed_value_start(buf, 0, 1, msg.guid);
	pop3_policy_msg_record_encode(buf, msg.guid, strlen(msg.guid), &msg);
	seed_buf("pop3-policy-records", "msg", buf);
	/* the same as version 1, for the conversion (mode 2) */
	seed_value_start(buf, 0, 2, msg.guid);
	offset = buf->used;
	pop3_policy_msg_record_encode(buf, msg.guid, strlen(msg.guid), &msg);
	to_v1(buf, offset);
	seed_buf("pop3-policy-records", "msg-v1", buf);

	uidl.guid = msg.guid;
	seed_value_start(buf, 1, 1, msg.uidl);
	pop3_policy_uidl_record_encode(buf, msg.uidl, strlen(msg.uidl), &uidl);
	seed_buf("pop3-policy-records", "uidl", buf);

	schema.schema_version = POP3_POLICY_SCHEMA_VERSION;
	schema.created = NOW;
	seed_value_start(buf, 2, 1, "");
	pop3_policy_schema_record_encode(buf, &schema);
	seed_buf("pop3-policy-records", "schema", buf);
	schema.schema_version = 2;
	seed_value_start(buf, 2, 2, "");
	offset = buf->used;
	pop3_policy_schema_record_encode(buf, &schema);
	to_v1(buf, offset);
	seed_buf("pop3-policy-records", "schema-v1", buf);

	flag.keyword = "$POP3Deleted";
	seed_value_start(buf, 3, 1, "");
	pop3_policy_flag_record_encode(buf, &flag);
	seed_buf("pop3-policy-records", "flag", buf);

	sweep.last_sweep = NOW;
	seed_value_start(buf, 4, 1, "");
	pop3_policy_sweep_record_encode(buf, &sweep);
	seed_buf("pop3-policy-records", "sweep", buf);

	seed_value_start(buf, 5, 0, "");
	pop3_policy_download_key_encode(buf, NOW, msg.guid);
	seed_buf("pop3-policy-records", "download-key", buf);

	key = t_buffer_create(64);
	pop3_policy_download_key_encode(key, NOW, msg.guid);
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 6);
	buffer_append_c(buf, 1);
	put_slice(buf, key->data, key->used);
	pop3_policy_download_value_encode(buf, key->data, key->used);
	seed_buf("pop3-policy-records", "download-value", buf);

	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 7);
	buffer_append(buf, "UID with space", 14);
	seed_buf("pop3-policy-records", "uidl-rules", buf);
	memset(long_guid, 'g', sizeof(long_guid));
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 7);
	buffer_append(buf, long_guid, sizeof(long_guid));
	seed_buf("pop3-policy-records", "long-guid", buf);

	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 8);
	buffer_append(buf, "\0\0\0\0\x65\x53\xf1\x00\0\0\0\x07\0\0\0\0\x66\0\0\0", 20);
	seed_buf("pop3-policy-records", "keep-days", buf);
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 9);
	buffer_append(buf, "\0\0\0\0\0\x10\0\0" "\0\0\0\0\0\0\x10\0"
		      "\0\0\0\0\0\0\0\x01" "\0\0\0\0\0\x40\0\0"
		      "\0\0\0\0\0\0\x40\0" "\0\0\0\0\0\0\0\0"
		      "\0\0\0\0\0\0\0\0", 56);
	seed_buf("pop3-policy-records", "quota", buf);

	/* the environment: schema 1 with messages (converted at open), and
	   schema 2 with stale index entries */
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0x57);		/* meta, msgs, uidls, schema, v1 */
	buffer_append_c(buf, 1);		/* version 1 */
	put_u32(buf, NOW);
	buffer_append_c(buf, 3);
	buffer_append_c(buf, 1 | 0x20);		/* msg without index entry */
	buffer_append_c(buf, 0);
	put_u32(buf, NOW - 8 * 86400);
	put_str(buf, "UID1");
	put_str(buf, "guid-one");
	buffer_append_c(buf, 1 | 0x20);
	buffer_append_c(buf, 1);
	put_u32(buf, NOW - 86400);
	put_str(buf, "");
	put_str(buf, "guid-two");
	buffer_append_c(buf, 2);		/* uidl reservation */
	put_str(buf, "guid-one");
	put_str(buf, "UID1");
	put_u16(buf, 7);			/* keep_days */
	put_u32(buf, NOW);
	seed_buf("pop3-policy-env", "schema1", buf);

	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0x5f);		/* every DBI, schema, v1 */
	buffer_append_c(buf, 2);
	put_u32(buf, NOW);
	buffer_append_c(buf, 3);
	buffer_append_c(buf, 1);		/* msg with index entry */
	buffer_append_c(buf, 0);
	put_u32(buf, NOW - 8 * 86400);
	put_str(buf, "UID2");
	put_str(buf, "guid-three");
	buffer_append_c(buf, 3);		/* index entry, no record */
	put_str(buf, "guid-gone");
	put_u32(buf, NOW - 9 * 86400);
	buffer_append_c(buf, 0x30);		/* raw downloads record */
	put_slice(buf, "\0\0\0\0\0\0\0\x01x", 9);
	put_str(buf, "\x01");
	put_u16(buf, 7);
	put_u32(buf, NOW);
	seed_buf("pop3-policy-env", "schema2-stale", buf);

	/* schema 3 with a version-1 record left behind (damaged) */
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0x1f);		/* every DBI, schema */
	buffer_append_c(buf, 3);
	put_u32(buf, NOW);
	buffer_append_c(buf, 2);
	buffer_append_c(buf, 1);		/* msg with index entry */
	buffer_append_c(buf, 0);
	put_u32(buf, NOW - 8 * 86400);
	put_str(buf, "UID3");
	put_str(buf, "guid-four");
	buffer_append_c(buf, 0x10);		/* raw msgs record, version 1 */
	put_str(buf, "guid-five");
	put_slice(buf, "\x01\0\0\0\0\0\0\0\0\x01\0\0\0\x09guid-five", 23);
	put_u16(buf, 7);
	put_u32(buf, NOW);
	seed_buf("pop3-policy-env", "schema3-v1-left", buf);

	seed_str("lmdb-settings", "defaults", "");
	seed_str("lmdb-settings", "all", "64M\n32G\n16M\n36h\n1d\n512\n1h\n");
	seed_str("lmdb-settings", "bad-reserve", "1M\n2M\n2M\n");
	seed_str("pop3-policy-settings", "keep", "keep\n7\nyes\n10s\n");
	seed_str("pop3-policy-settings", "move", "move:Trash\n0\nno\n5\n");
	seed_str("pop3-policy-settings", "mark-read", "mark-read\n\n\n1 min\n");
}

