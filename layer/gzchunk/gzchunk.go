// Package gzchunk reads and writes kiln's chunked gzip: an ordinary
// multi-member gzip stream (RFC 1952) whose members a reader can find
// without inflating them, so that they can be inflated in parallel.
//
// A gzip stream is one deflate stream per member, and a deflate stream
// gives no way to find where it ends but to decode it: a single-member
// layer (what every other tool writes) can only be inflated on one core.
// The Writer cuts its input into fixed ChunkSize pieces and compresses each
// as one complete member, with no dictionary carried over from the previous
// piece. Each member's header carries one extra subfield (FLG.FEXTRA), ID
// 'K','C', whose 4-byte payload is the member's total length (header,
// deflate data and trailer) as a little-endian uint32: a reader that knows
// the subfield reads the whole member and hands it to a worker; every
// other gzip reader skips the extra field and reads the stream as the
// concatenation of its members, as gzip has always allowed.
//
// The Reader decodes any gzip stream exactly as klauspost's gzip.Reader
// does (multistream), producing the same bytes and failing where it fails:
// members with the subfield are inflated in parallel once their length,
// deflate end, CRC-32 and size all check out, and anything else (another
// tool's members, a member whose declared length does not hold, corrupt
// data) is decoded by streaming from where the member starts.
package gzchunk

import (
	"encoding/binary"
)

// ChunkSize is how much input the Writer compresses into one member. It
// is part of the format's output: the same input gives the same bytes
// only for the same chunk size, so it is fixed.
const ChunkSize = 1 << 20

// maxMember bounds both the declared length of a member the Reader reads
// whole and the bytes it inflates from one. A kiln member holds ChunkSize
// bytes and, incompressible, a little more than that compressed; any
// larger claim is decoded by streaming, so a lying length field can make
// the Reader neither allocate nor buffer more than this per member.
const maxMember = 2 * ChunkSize

const (
	gzipID1     = 0x1f
	gzipID2     = 0x8b
	gzipDeflate = 8
	flagExtra   = 1 << 2

	// subfield IDs (RFC 1952 2.3.1.1) of the member length.
	subfieldID1 = 'K'
	subfieldID2 = 'C'

	// headerLen is the fixed header of a kiln member: 10 bytes, XLEN,
	// then one subfield of 4 bytes (SI1, SI2, LEN) and its 4-byte payload.
	headerLen  = 10 + 2 + 4 + 4
	trailerLen = 8

	// xfl and osUnknown are fixed: the header depends on nothing but the
	// member's length.
	xfl       = 0
	osUnknown = 255
)

var le = binary.LittleEndian

// putHeader writes a kiln member header declaring total length n into
// b[:headerLen].
func putHeader(b []byte, n uint32) {
	b[0], b[1], b[2], b[3] = gzipID1, gzipID2, gzipDeflate, flagExtra
	le.PutUint32(b[4:8], 0) // mtime: none
	b[8], b[9] = xfl, osUnknown
	le.PutUint16(b[10:12], 8) // XLEN: one subfield
	b[12], b[13] = subfieldID1, subfieldID2
	le.PutUint16(b[14:16], 4)
	le.PutUint32(b[16:20], n)
}

// memberLen returns the total length a kiln member header declares, and
// whether hdr is a kiln member header whose length is worth reading the
// member whole for. Only the exact layout the Writer writes qualifies (any
// mtime, XFL and OS): FEXTRA alone, one subfield. Every such header is one
// klauspost's gzip.Reader accepts as well, so taking it never turns an
// error into success.
func memberLen(hdr []byte) (int, bool) {
	if len(hdr) < headerLen ||
		hdr[0] != gzipID1 || hdr[1] != gzipID2 || hdr[2] != gzipDeflate || hdr[3] != flagExtra ||
		le.Uint16(hdr[10:12]) != 8 || hdr[12] != subfieldID1 || hdr[13] != subfieldID2 || le.Uint16(hdr[14:16]) != 4 {
		return 0, false
	}
	n := le.Uint32(hdr[16:20])
	if n < headerLen+trailerLen || n > maxMember {
		return 0, false
	}
	return int(n), true
}
