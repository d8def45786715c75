#ifndef LMDB_MAIL_H
#define LMDB_MAIL_H

#include "index-mail.h"
#include "lmdb-records.h"

struct lmdb_mail {
	struct index_mail imail;

	/* the link and body records of the current message, looked up
	   once per message and kept until it changes */
	pool_t records_pool;
	uint32_t records_seq, records_uid;
	struct lmdb_link_record link;
	struct lmdb_body_record body;
	/* FALSE for a message still being saved: only the body exists */
	bool have_link;
	/* the last lookup found the link record damaged */
	bool link_damaged;
	/* body is valid too, not only link (a POP3 listing needs only the
	   link: one page per many messages instead of one per message) */
	bool have_body;
	/* our own stream under data->stream (plugins may wrap it): its
	   snapshot is where the body is verified */
	struct istream *body_stream;
	/* every chunk of the open stream's body was checked */
	bool body_verified;
	/* a message being saved whose body is still in memory (the save
	   context owns it) */
	const struct lmdb_body_writer *deferred;
};

#define LMDB_MAIL(s) (container_of(s, struct lmdb_mail, imail.mail.mail))

/* Look up the current message's link and body records (cached). */
int lmdb_mail_get_records(struct lmdb_mail *mail);
/* The same for the link record only. */
int lmdb_mail_get_link(struct lmdb_mail *mail);
/* The same without opening the mail as far as Dovecot is concerned (no
   mail event, no lookup_abort check): for copying, which needs only the
   body id and never shows the mail to anyone. */
int lmdb_mail_read_records(struct lmdb_mail *mail);

#endif
