/* Copyright (c) 2026 dovecot-lmdb authors, see the included COPYING file */

#include "lib.h"
#include "buffer.h"
#include "istream-private.h"
#include "lmdb-body.h"
#include "lmdb-istream.h"

/* chunks copied out per read call (64 KiB with 4 KiB chunks) */
#define LMDB_ISTREAM_READ_CHUNKS 16

struct lmdb_istream {
	struct istream_private istream;
	struct lmdb_body_reader *reader;
	uint64_t body_id;
	uint64_t size;
	size_t chunk_size;
	uint32_t chunk_count;
	buffer_t *buf;
	/* chunks to copy out on the next read */
	uint32_t read_chunks;
	bool verified;
	bool fatal_on_error;
};

static void lmdb_istream_destroy(struct iostream_private *stream)
{
	struct lmdb_istream *lstream =
		container_of(stream, struct lmdb_istream, istream.iostream);

	lmdb_body_reader_close(&lstream->reader);
	buffer_free(&lstream->buf);
}

static ssize_t lmdb_istream_fail(struct lmdb_istream *lstream,
				 const char *error)
{
	struct istream_private *stream = &lstream->istream;

	if (lstream->fatal_on_error) {
		/* the POP3 server would end the message with "." now: the
		   client must see a broken connection instead */
		i_fatal("lmdb: Reading body %"PRIu64" failed at offset "
			"%"PRIuUOFF_T": %s (ending the POP3 connection so "
			"that the client doesn't keep a truncated message)",
			lstream->body_id, stream->istream.v_offset, error);
	}
	io_stream_set_error(&stream->iostream, "%s", error);
	stream->istream.stream_errno = EIO;
	return -1;
}

static ssize_t lmdb_istream_read(struct istream_private *stream)
{
	struct lmdb_istream *lstream =
		container_of(stream, struct lmdb_istream, istream);
	uoff_t next_offset;
	uint32_t idx, skip_in_chunk;
	size_t old_pos;
	const char *error;
	int ret;

	next_offset = stream->istream.v_offset + (stream->pos - stream->skip);
	if (next_offset >= lstream->size) {
		stream->istream.eof = TRUE;
		return -1;
	}
	/* drop what the reader consumed, keep what it hasn't */
	if (stream->skip > 0) {
		buffer_delete(lstream->buf, 0, stream->skip);
		stream->pos -= stream->skip;
		stream->skip = 0;
		stream->buffer = lstream->buf->data;
	}
	if (stream->pos >= stream->max_buffer_size)
		return -2;

	idx = next_offset / lstream->chunk_size;
	skip_in_chunk = next_offset % lstream->chunk_size;
	if (idx >= lstream->chunk_count) {
		return lmdb_istream_fail(lstream, t_strdup_printf(
			"lmdb body %"PRIu64" is shorter than its record says",
			lstream->body_id));
	}
	/* several chunks per transaction: fewer round trips; straight
	   into our buffer */
	old_pos = stream->pos;
	i_assert(lstream->buf->used == old_pos);
	ret = lmdb_body_reader_read(lstream->reader, idx,
				    I_MIN(lstream->read_chunks,
					  lstream->chunk_count - idx),
				    lstream->buf, !lstream->verified, &error);
	/* start small (a header fetch needs a few KiB), grow for bodies */
	if (lstream->read_chunks < LMDB_ISTREAM_READ_CHUNKS)
		lstream->read_chunks *= 2;
	if (ret > 0 && lstream->buf->used - old_pos <= skip_in_chunk) {
		ret = 0;
		error = t_strdup_printf("lmdb body %"PRIu64" chunk %u is short",
					lstream->body_id, idx);
	}
	if (ret <= 0) {
		/* the buffer may have moved while it grew: never leave the
		   stream pointing at freed memory */
		buffer_set_used_size(lstream->buf, old_pos);
		stream->buffer = lstream->buf->data;
		return lmdb_istream_fail(lstream, error);
	}
	/* after a seek into the middle of a chunk */
	if (skip_in_chunk > 0)
		buffer_delete(lstream->buf, old_pos, skip_in_chunk);
	stream->buffer = lstream->buf->data;
	stream->pos = lstream->buf->used;
	return stream->pos - old_pos;
}

static void lmdb_istream_seek(struct istream_private *stream,
			      uoff_t v_offset, bool mark ATTR_UNUSED)
{
	struct lmdb_istream *lstream =
		container_of(stream, struct lmdb_istream, istream);

	stream->istream.v_offset = v_offset;
	stream->skip = stream->pos = 0;
	lstream->read_chunks = lstream->verified ? LMDB_ISTREAM_READ_CHUNKS : 2;
	buffer_set_used_size(lstream->buf, 0);
	stream->buffer = lstream->buf->data;
}

static int lmdb_istream_stat(struct istream_private *stream,
			     bool exact ATTR_UNUSED)
{
	struct lmdb_istream *lstream =
		container_of(stream, struct lmdb_istream, istream);

	stream->statbuf.st_size = lstream->size;
	return 0;
}

static int lmdb_istream_get_size(struct istream_private *stream,
				 bool exact ATTR_UNUSED, uoff_t *size_r)
{
	struct lmdb_istream *lstream =
		container_of(stream, struct lmdb_istream, istream);

	*size_r = lstream->size;
	return 1;
}

int lmdb_istream_verify(struct istream *input, const char **error_r)
{
	struct lmdb_istream *lstream =
		container_of(input->real_stream, struct lmdb_istream, istream);
	int ret;

	if (lstream->verified)
		return 1;
	if ((ret = lmdb_body_reader_verify(lstream->reader, FALSE,
					   error_r)) <= 0)
		return ret;
	lstream->verified = TRUE;
	/* the whole body is wanted: large reads from the start */
	lstream->read_chunks = LMDB_ISTREAM_READ_CHUNKS;
	return 1;
}

void lmdb_istream_set_fatal_on_error(struct istream *input)
{
	struct lmdb_istream *lstream =
		container_of(input->real_stream, struct lmdb_istream, istream);

	lstream->fatal_on_error = TRUE;
}

struct istream *
lmdb_istream_create(struct lmdb_body_reader *reader, uint64_t body_id,
		    const struct lmdb_body_record *rec)
{
	struct lmdb_istream *lstream;
	struct istream *input;

	lstream = i_new(struct lmdb_istream, 1);
	lstream->reader = reader;
	lstream->body_id = body_id;
	lstream->size = rec->physical_size;
	/* the record's decoder bounds chunk_size (LMDB_CHUNK_SIZE_MAX), so
	   the products below can't overflow */
	lstream->chunk_size = rec->chunk_size == 0 ? 1 : rec->chunk_size;
	lstream->chunk_count = rec->chunk_count;
	lstream->read_chunks = 2;
	lstream->buf = buffer_create_dynamic(default_pool,
		I_MIN(lstream->chunk_size, 1024*1024));

	lstream->istream.iostream.destroy = lmdb_istream_destroy;
	lstream->istream.read = lmdb_istream_read;
	lstream->istream.seek = lmdb_istream_seek;
	lstream->istream.stat = lmdb_istream_stat;
	lstream->istream.get_size = lmdb_istream_get_size;
	lstream->istream.istream.readable_fd = FALSE;
	lstream->istream.istream.blocking = TRUE;
	lstream->istream.istream.seekable = TRUE;
	lstream->istream.buffer = lstream->buf->data;
	/* filters stacked on us (zlib, mail_crypt) size their buffers
	   from ours */
	lstream->istream.max_buffer_size =
		lstream->chunk_size * LMDB_ISTREAM_READ_CHUNKS;

	input = i_stream_create(&lstream->istream, NULL, -1, 0);
	i_stream_set_name(input, t_strdup_printf("(lmdb body %"PRIu64")",
						 body_id));
	return input;
}
