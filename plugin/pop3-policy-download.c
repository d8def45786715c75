/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "istream-private.h"
#include "pop3-policy-plugin.h"

/* "Downloaded" = a stream that Dovecot's POP3 server opened for RETR or
   TOP was read to its end. POP3 reads a RETR, and a TOP whose line
   count reaches past the body (fetchmail's TOP n 99999999), until the
   stream returns EOF; TOP n 0 stops after the header, and an aborted
   RETR stops mid-way, so neither ever sees EOF. Size lookups open
   streams with other reasons and are not wrapped. */

struct pop3_policy_istream {
	struct istream_private istream;
	struct pop3_policy_mailbox *pbox;
	char *guid;
	bool seen_eof;
};

static void pop3_policy_istream_destroy(struct iostream_private *stream)
{
	struct pop3_policy_istream *dstream =
		container_of(stream, struct pop3_policy_istream,
			     istream.iostream);

	i_free(dstream->guid);
	i_stream_unref(&dstream->istream.parent);
}

static ssize_t pop3_policy_istream_read(struct istream_private *stream)
{
	struct pop3_policy_istream *dstream =
		container_of(stream, struct pop3_policy_istream, istream);
	struct pop3_policy_pending *pending;
	ssize_t ret;

	i_stream_seek(stream->parent, stream->parent_start_offset +
		      stream->istream.v_offset);
	ret = i_stream_read_copy_from_parent(&stream->istream);
	if (ret == -1 && stream->istream.stream_errno == 0 &&
	    !dstream->seen_eof) {
		dstream->seen_eof = TRUE;
		/* only the first download counts: the flush keeps an older
		   time it finds in LMDB */
		pending = pop3_policy_pending_get(dstream->pbox,
						  dstream->guid);
		if (pending->download == 0)
			pending->download = pop3_policy_now();
	}
	return ret;
}

static struct istream *
pop3_policy_istream_create(struct istream *input,
			   struct pop3_policy_mailbox *pbox, const char *guid)
{
	struct pop3_policy_istream *dstream;

	dstream = i_new(struct pop3_policy_istream, 1);
	dstream->pbox = pbox;
	dstream->guid = i_strdup(guid);
	dstream->istream.max_buffer_size =
		input->real_stream->max_buffer_size;
	dstream->istream.stream_size_passthrough = TRUE;
	dstream->istream.read = pop3_policy_istream_read;
	dstream->istream.iostream.destroy = pop3_policy_istream_destroy;
	dstream->istream.istream.readable_fd = FALSE;
	dstream->istream.istream.blocking = input->blocking;
	dstream->istream.istream.seekable = input->seekable;
	return i_stream_create(&dstream->istream, input, -1, 0);
}

static bool pop3_policy_reason_is_download(struct mail_private *mail)
{
	const char *reason = mail->get_stream_reason;

	return reason != NULL &&
		(strcmp(reason, "RETR") == 0 || strcmp(reason, "TOP") == 0);
}

int pop3_policy_download_get_stream(struct mail *_mail, bool get_body,
				    struct message_size *hdr_size,
				    struct message_size *body_size,
				    struct istream **stream_r)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct pop3_policy_mail *pmail = POP3_POLICY_MAIL_CONTEXT(mail);
	struct pop3_policy_mailbox *pbox =
		POP3_POLICY_MAILBOX_CONTEXT(_mail->box);
	struct istream *input;
	const char *guid;

	if (pmail->module_ctx.super.get_stream(_mail, get_body, hdr_size,
					       body_size, &input) < 0)
		return -1;
	if (!pop3_policy_reason_is_download(mail) || !pbox->maildrop) {
		*stream_r = input;
		return 0;
	}
	if (pmail->download_input != NULL &&
	    pmail->download_input->real_stream->parent == input) {
		i_stream_seek(pmail->download_input, 0);
		*stream_r = pmail->download_input;
		return 0;
	}
	if (mail_get_special(_mail, MAIL_FETCH_GUID, &guid) < 0 ||
	    guid[0] == '\0') {
		/* without a GUID nothing can be recorded; don't fail the
		   RETR for it */
		e_warning(mail_event(_mail), POP3_POLICY_LOG_PREFIX
			  "No GUID: download not recorded");
		*stream_r = input;
		return 0;
	}
	i_stream_unref(&pmail->download_input);
	/* the mail owns the parent stream; our wrapper lives as long as
	   the mail stays on this message */
	pmail->download_input = pop3_policy_istream_create(input, pbox, guid);
	*stream_r = pmail->download_input;
	return 0;
}

void pop3_policy_download_close(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct pop3_policy_mail *pmail = POP3_POLICY_MAIL_CONTEXT(mail);

	i_stream_unref(&pmail->download_input);
}
