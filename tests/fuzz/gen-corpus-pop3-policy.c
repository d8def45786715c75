/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

/* Seeds of the pop3_policy targets, by the plugin's encoders. */

#include "lib.h"
#include "buffer.h"
#include "pop3-policy-records.h"
#include "gen-corpus.h"

/* --- pop3_policy --- */

void gen_corpus_pop3_policy(void)
{
	struct pop3_policy_msg_record msg;
	struct pop3_policy_uidl_record uidl;
	struct pop3_policy_schema_record schema;
	struct pop3_policy_flag_record flag;
	struct pop3_policy_sweep_record sweep;
	buffer_t *buf = t_buffer_create(256);
	char long_guid[600];

	i_zero(&msg);
	msg.flags = POP3_POLICY_MSG_FLAG_HIDDEN;
	msg.first_download = NOW;
	msg.uidl = "00000001.1700000000";
	msg.guid = "3c1b7a7e0f3e2b6559d30000a1b2c3d4";
	buffer_append_c(buf, 0);
	pop3_policy_msg_record_encode(buf, &msg);
	seed_buf("pop3-policy-records", "msg", buf);

	uidl.guid = msg.guid;
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 1);
	pop3_policy_uidl_record_encode(buf, &uidl);
	seed_buf("pop3-policy-records", "uidl", buf);

	schema.schema_version = POP3_POLICY_SCHEMA_VERSION;
	schema.created = NOW;
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 2);
	pop3_policy_schema_record_encode(buf, &schema);
	seed_buf("pop3-policy-records", "schema", buf);

	flag.keyword = "$POP3Deleted";
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 3);
	pop3_policy_flag_record_encode(buf, &flag);
	seed_buf("pop3-policy-records", "flag", buf);

	sweep.last_sweep = NOW;
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 4);
	pop3_policy_sweep_record_encode(buf, &sweep);
	seed_buf("pop3-policy-records", "sweep", buf);

	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 5);
	pop3_policy_download_key_encode(buf, NOW, msg.guid);
	seed_buf("pop3-policy-records", "download-key", buf);

	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 6);
	pop3_policy_download_value_encode(buf);
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
	buffer_append_c(buf, 0x17);		/* meta, msgs, uidls, schema */
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
	buffer_append_c(buf, 0x1f);		/* every DBI, schema */
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

	seed_str("lmdb-settings", "defaults", "");
	seed_str("lmdb-settings", "all", "64M\n32G\n16M\n36h\n1d\n512\n1h\n");
	seed_str("lmdb-settings", "bad-reserve", "1M\n2M\n2M\n");
	seed_str("pop3-policy-settings", "keep", "keep\n7\nyes\n10s\n");
	seed_str("pop3-policy-settings", "move", "move:Trash\n0\nno\n5\n");
	seed_str("pop3-policy-settings", "mark-read", "mark-read\n\n\n1 min\n");
}

