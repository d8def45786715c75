/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "ostream-private.h"
#include "lmdb-body.h"
#include "lmdb-ostream.h"

struct lmdb_ostream {
	struct ostream_private ostream;
	struct lmdb_body_writer *writer;
};

static ssize_t
lmdb_ostream_sendv(struct ostream_private *stream,
		   const struct const_iovec *iov, unsigned int iov_count)
{
	struct lmdb_ostream *lstream =
		container_of(stream, struct lmdb_ostream, ostream);
	const char *error;
	size_t total = 0;
	unsigned int i;

	for (i = 0; i < iov_count; i++) {
		if (lmdb_body_writer_append(lstream->writer, iov[i].iov_base,
					    iov[i].iov_len, &error) < 0) {
			io_stream_set_error(&stream->iostream, "%s", error);
			stream->ostream.stream_errno = EIO;
			return -1;
		}
		total += iov[i].iov_len;
	}
	stream->ostream.offset += total;
	return total;
}

struct ostream *lmdb_ostream_create(struct lmdb_body_writer *writer)
{
	struct lmdb_ostream *lstream;
	struct ostream *output;

	lstream = i_new(struct lmdb_ostream, 1);
	lstream->writer = writer;
	lstream->ostream.sendv = lmdb_ostream_sendv;
	output = o_stream_create(&lstream->ostream, NULL, -1);
	o_stream_set_name(output, "(lmdb body)");
	return output;
}
