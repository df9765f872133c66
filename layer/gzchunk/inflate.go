package gzchunk

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"sync"

	"github.com/klauspost/compress/flate"
)

// kiln's deflate decoder (RFC 1951). A member the Reader's workers hold
// whole is decoded into a buffer of the size its trailer states, with no
// window to maintain; a member that is streamed (another tool's, or one
// whose framing did not check out) is decoded by the same loop in a window
// that keeps the 32 KiB a match may reach back (memberStream). The loop
// reads the input 64 bits at a time and writes matches 8 bytes at a time,
// with no reader interface in it: klauspost's decoder, which pulls one
// byte at a time through an io.ByteReader, takes 1.5 to 1.7 times as long
// on a layer (BenchmarkInflate, BenchmarkDecode), and inflating is most of
// the CPU time of pulling one.
//
// It reads the streams klauspost's decoder reads, into the same bytes, and
// refuses the others: every rule that decoder enforces (complete Huffman
// codes but for a single one-bit code, no code length repeat before the
// first length, at most 286 literal/length and 30 distance codes, no
// symbol outside those, no distance before the start, no symbol decoded
// from past the end of the input) is enforced here too (FuzzInflate and
// FuzzReader compare the two). A member read whole that fails any check
// is streamed again from its start, and the member's CRC-32 and size are
// checked against the output either way.

const (
	litRoot  = 10 // bits of the first lookup for literal/length codes
	distRoot = 8  // and for distance codes
	maxBits  = 15 // longest deflate code

	maxLit  = 286 // literal/length codes a dynamic block may declare
	maxDist = 30  // distance codes it may declare

	// copySlack is the room past the declared size the decode buffer
	// needs: a match is copied 8 bytes at a time and may write up to 7
	// bytes beyond its end.
	copySlack = 8
)

// A table entry packs what a lookup says:
//
//	bits 0-3   code bits to consume at this lookup
//	bits 4-7   extra bits that follow (a subtable: its index bits)
//	bits 8-10  kind
//	bits 16-31 value: the literal, base length or distance, or the
//	           subtable's offset in the table
const (
	kindLit = iota << 8
	kindLen
	kindEnd
	kindSub
	kindBad // no code leads here, or the symbol is not allowed
	kindDist

	kindMask = 7 << 8
)

var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}

	// the order code length code lengths come in (RFC 1951 3.2.7)
	codeLenOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
)

func litEntry(sym int) uint32 {
	switch {
	case sym < 256:
		return kindLit | uint32(sym)<<16
	case sym == 256:
		return kindEnd
	case sym < maxLit:
		i := sym - 257
		return kindLen | uint32(lengthExtra[i])<<4 | uint32(lengthBase[i])<<16
	}
	return kindBad // 286 and 287 exist in the fixed code only, unused
}

func distEntry(sym int) uint32 {
	if sym < maxDist {
		return kindDist | uint32(distExtra[sym])<<4 | uint32(distBase[sym])<<16
	}
	return kindBad // 30 and 31, fixed code only
}

func codeLenEntry(sym int) uint32 { return kindLit | uint32(sym)<<16 }

// buildTable fills table (length at least 1<<root, room for subtables
// after that) with the canonical Huffman code of lens, and returns the
// table cut to what it used. It fails for an over-subscribed code and for
// an incomplete one, except a code of one symbol of one bit (and no
// symbol at all), as klauspost's decoder does.
func buildTable(table []uint32, lens []uint8, root uint, entry func(int) uint32) ([]uint32, bool) {
	var count [maxBits + 1]int
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	maxLen, n := 0, 0
	for l := 1; l <= maxBits; l++ {
		if count[l] > 0 {
			maxLen = l
		}
		n += count[l]
	}
	left := 1
	for l := 1; l <= maxBits; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return table[:0], false // over-subscribed
		}
	}
	size := 1 << root
	table = table[:size]
	if left > 0 && !(n == 0 || (n == 1 && maxLen == 1)) {
		return table[:0], false // incomplete
	}
	if left > 0 {
		for i := range table {
			table[i] = kindBad
		}
	}
	// Each symbol's canonical code, reversed: codes are read least
	// significant bit first, so that is its table index.
	var next [maxBits + 1]uint32
	code := uint32(0)
	for l := 1; l <= maxBits; l++ {
		code = (code + uint32(count[l-1])) << 1
		next[l] = code
	}
	var rev [288]uint32
	for sym, l := range lens {
		if l > 0 {
			rev[sym] = bits.Reverse32(next[l]) >> (32 - uint(l))
			next[l]++
		}
	}
	// A code longer than root bits goes to a subtable under its first
	// root bits; a subtable is as large as the longest code under it.
	var subBits [1 << litRoot]uint8
	var subOff [1 << litRoot]uint16 // 0: not opened yet
	mask := uint32(1)<<root - 1
	for sym, l := range lens {
		if sb := int(l) - int(root); sb > int(subBits[rev[sym]&mask]) {
			subBits[rev[sym]&mask] = uint8(sb)
		}
	}
	for sym, l := range lens {
		if l == 0 {
			continue
		}
		r := rev[sym]
		e := entry(sym)
		if uint(l) <= root {
			for i := r; i < uint32(size); i += 1 << l {
				table[i] = e | uint32(l)
			}
			continue
		}
		p := r & mask
		sb := uint(subBits[p])
		if subOff[p] == 0 {
			off := len(table)
			if off+1<<sb > 1<<16 {
				return table[:0], false
			}
			for range 1 << sb {
				table = append(table, kindBad)
			}
			subOff[p] = uint16(off)
			table[p] = kindSub | uint32(off)<<16 | uint32(sb)<<4 | uint32(root)
		}
		off := uint32(subOff[p])
		sl := uint(l) - root
		for i := r >> root; i < 1<<sb; i += 1 << sl {
			table[off+i] = e | uint32(sl)
		}
	}
	return table, true
}

// inflater holds the tables of one decoding worker.
type inflater struct {
	lit, dist, codeLen []uint32
	lens               [maxLit + maxDist]uint8
}

func newInflater() *inflater {
	return &inflater{
		// the main table and, at most, one subtable per long code
		lit:     make([]uint32, 0, 1<<litRoot+maxLit<<(maxBits-litRoot)),
		dist:    make([]uint32, 0, 1<<distRoot+maxDist<<(maxBits-distRoot)),
		codeLen: make([]uint32, 0, 1<<7),
	}
}

// inflaterPool keeps inflaters (their tables) across Readers: a build
// reads many small layers.
var inflaterPool sync.Pool

func getInflater() *inflater {
	if f, ok := inflaterPool.Get().(*inflater); ok {
		return f
	}
	return newInflater()
}

// the fixed code's tables (RFC 1951 3.2.6), built once
var fixedLit, fixedDist = func() ([]uint32, []uint32) {
	var ll [288]uint8
	for i := range ll {
		switch {
		case i < 144:
			ll[i] = 8
		case i < 256:
			ll[i] = 9
		case i < 280:
			ll[i] = 7
		default:
			ll[i] = 8
		}
	}
	var dl [32]uint8
	for i := range dl {
		dl[i] = 5
	}
	lit, _ := buildTable(make([]uint32, 0, 1<<litRoot+64), ll[:], litRoot, litEntry)
	dist, _ := buildTable(make([]uint32, 0, 1<<distRoot), dl[:], distRoot, distEntry)
	return lit, dist
}()

// refill tops the bit buffer up to at least 56 bits: 8 bytes at a time
// while 8 are left, then one at a time, with zeros past the end of src (p
// keeps counting them; a stream that uses them fails at its end check).
// Bits above nbits are either zero or the very bits of the bytes that
// come next, so loading those bytes again leaves them as they are.
func refill(src []byte, p int, b uint64, nb uint) (int, uint64, uint) {
	if p+8 <= len(src) {
		b |= binary.LittleEndian.Uint64(src[p:]) << nb
		return p + int((63-nb)>>3), b, nb | 56
	}
	return refillTail(src, p, b, nb)
}

func refillTail(src []byte, p int, b uint64, nb uint) (int, uint64, uint) {
	for nb <= 56 {
		if p < len(src) {
			b |= uint64(src[p]) << nb
		}
		p++
		nb += 8
	}
	return p, b, nb
}

// inflate decodes src, which must be exactly one deflate stream, into
// dst[:size]; dst needs size+copySlack bytes of capacity. It returns the
// output and true only if the stream ends at the end of src having
// produced exactly size bytes, and klauspost's decoder would read it the
// same.
func (f *inflater) inflate(dst, src []byte, size int) ([]byte, bool) {
	if cap(dst) < size+copySlack {
		return nil, false
	}
	dst = dst[:size+copySlack]
	var st decodeState
	o, res := f.decode(&st, src, true, dst, 0, size, size+1)
	if res != decodeEnd || st.p-int(st.nb>>3) != len(src) || o != size {
		return nil, false
	}
	return dst[:o], true
}

// decodeState is where a decode stopped: between two symbols, or between
// blocks.
type decodeState struct {
	b     uint64 // bit buffer, next bit lowest
	nb    uint   // valid bits in b
	p     int    // next byte of src to load
	final bool   // the block being decoded is the last
	// mode is what comes next: a block header, the symbols of a Huffman
	// block (with lit and dist), or the rest of a stored block (stored
	// bytes)
	mode      int
	stored    int
	lit, dist []uint32
}

// save records where decode stopped (a method, not a closure: a closure
// would keep decode's hot locals out of registers).
func (st *decodeState) save(b uint64, nb uint, p, mode int, lit, dist []uint32) {
	st.b, st.nb, st.p, st.mode, st.lit, st.dist = b, nb, p, mode, lit, dist
}

// bad records where decode found the stream bad, and says whether it is
// corrupt or ended early: whether it used bits past the end of src.
func (st *decodeState) bad(p int, nb uint, srcLen int) int {
	st.p = p
	if 8*p-int(nb) > 8*srcLen {
		return decodeShort
	}
	return decodeBad
}

const (
	modeHeader = iota
	modeHuffman
	modeStored
)

// Why decode returned.
const (
	decodeEnd   = iota // the final block ended
	decodeBad          // the stream is not one klauspost's decoder reads alike
	decodeShort        // it is cut short (src ended, srcEnd true)
	decodeInput        // it needs more of src (srcEnd false)
	decodeFlush        // the output reached flushAt
)

// inputMargin is what decode keeps ahead in src before decoding a symbol
// when more may come (srcEnd false): two 8-byte refills. A block header
// asks for headerMargin: the largest dynamic header fits.
const (
	inputMargin  = 16
	headerMargin = 1024
)

// decode goes on decoding from st into dst, writing from o on, never past
// limit (a stream that would is decodeBad) and stopping once o reaches
// flushAt at the next symbol. Unless srcEnd says src holds the rest of the
// stream, it stops with decodeInput when a symbol or header might need
// bytes src does not have yet; the caller appends them and calls again.
// dst needs copySlack bytes past limit. It returns where the output is.
func (f *inflater) decode(st *decodeState, src []byte, srcEnd bool, dst []byte, o, limit, flushAt int) (int, int) {
	out := dst[:limit] // what literals and short copies write
	b, nb, p := st.b, st.nb, st.p
	lit, dist := st.lit, st.dist
	pStop, hStop := len(src)-inputMargin, len(src)-headerMargin
	if srcEnd {
		hStop = len(src) + 8
	}
	// Near the end of src, refill pads it with zeros: past pStop every
	// symbol is checked to have used none of them, and one that did is
	// dropped, output and all, as klauspost's decoder stops at the end
	// of its input.
	safeO := o
	for {
		switch st.mode {
		case modeStored:
			n := min(st.stored, len(src)-p, limit-o)
			o += copy(dst[o:], src[p:p+n])
			p += n
			st.stored -= n
			if st.stored > 0 {
				st.save(b, nb, p, modeStored, lit, dist)
				if o == limit {
					if flushAt > limit {
						return o, st.bad(p, nb, len(src))
					}
					return o, decodeFlush
				}
				if srcEnd {
					return o, decodeShort
				}
				return o, decodeInput
			}
			st.mode = modeHeader
			continue
		case modeHeader:
			if st.final {
				st.save(b, nb, p, modeHeader, lit, dist)
				if 8*p-int(nb) > 8*len(src) {
					return o, st.bad(p, nb, len(src)) // ended in the padding
				}
				return o, decodeEnd
			}
			if p > hStop {
				st.save(b, nb, p, modeHeader, lit, dist)
				if srcEnd {
					return o, st.bad(p, nb, len(src))
				}
				return o, decodeInput
			}
			p, b, nb = refill(src, p, b, nb)
			st.final = b&1 == 1
			typ := (b >> 1) & 3
			b >>= 3
			nb -= 3
			switch typ {
			case 0: // stored: LEN and NLEN from the next byte boundary
				q := p - int(nb>>3)
				b, nb = 0, 0
				if q+4 > len(src) {
					st.p = q
					return o, decodeShort // hStop leaves room: src has ended
				}
				n := int(src[q]) | int(src[q+1])<<8
				if n^0xffff != int(src[q+2])|int(src[q+3])<<8 {
					return o, st.bad(p, nb, len(src))
				}
				p = q + 4
				st.stored = n
				st.mode = modeStored
				continue
			case 1:
				lit, dist = fixedLit, fixedDist
			case 2:
				var ok bool
				if p, b, nb, ok = f.readCodes(src, p, b, nb); !ok {
					return o, st.bad(p, nb, len(src))
				}
				lit, dist = f.lit, f.dist
			default:
				return o, st.bad(p, nb, len(src))
			}
			st.mode = modeHuffman
		}
		// The main tables as arrays: their lookups need no bounds check.
		litMain := (*[1 << litRoot]uint32)(lit)
		distMain := (*[1 << distRoot]uint32)(dist)
		for {
			if p > pStop || o >= flushAt {
				if srcEnd && o < flushAt {
					if 8*p-int(nb) > 8*len(src) {
						return safeO, st.bad(p, nb, len(src))
					}
					safeO = o
				} else {
					st.save(b, nb, p, modeHuffman, lit, dist)
					if o >= flushAt {
						return o, decodeFlush
					}
					return o, decodeInput
				}
			}
			// A literal/length code takes at most 15 bits; the length's
			// extra bits, the distance code and its extra bits 33 more.
			if nb < maxBits {
				p, b, nb = refill(src, p, b, nb)
			}
			e := litMain[b&(1<<litRoot-1)]
			if e&kindMask == kindSub {
				b >>= litRoot
				nb -= litRoot
				e = lit[e>>16+uint32(b)&(1<<(e>>4&15)-1)]
			}
			n := uint(e & 15)
			b >>= n
			nb -= n
			if k := e & kindMask; k != kindLen {
				if k == kindLit && o < len(out) {
					out[o] = byte(e >> 16)
					o++
					continue
				}
				if k == kindEnd {
					break
				}
				return o, st.bad(p, nb, len(src))
			}
			if nb < 33 {
				p, b, nb = refill(src, p, b, nb)
			}
			x := uint(e >> 4 & 15)
			length := int(e>>16) + int(b&(1<<x-1))
			b >>= x
			nb -= x
			d := distMain[b&(1<<distRoot-1)]
			if d&kindMask == kindSub {
				b >>= distRoot
				nb -= distRoot
				d = dist[d>>16+uint32(b)&(1<<(d>>4&15)-1)]
			}
			if d&kindMask != kindDist {
				return o, st.bad(p, nb, len(src))
			}
			n = uint(d & 15)
			b >>= n
			nb -= n
			x = uint(d >> 4 & 15)
			back := int(d>>16) + int(b&(1<<x-1))
			b >>= x
			nb -= x
			if back > o || o+length > len(out) {
				return o, st.bad(p, nb, len(src))
			}
			// 8 bytes at a time, the overrun staying in the slack: from
			// back bytes behind when that is at least 8, else from the
			// nearest multiple of back that is, once the first 8 bytes
			// are written one by one (a run of zeros is back 1).
			s, i := o-back, 0
			if back < 8 {
				for ; i < length && i < 8; i++ {
					out[o+i] = out[s+i]
				}
				s = o + i - back*((8+back-1)/back)
			}
			for ; i < length; i += 8 {
				binary.LittleEndian.PutUint64(dst[o+i:], binary.LittleEndian.Uint64(dst[s:]))
				s += 8
			}
			o += length
		}
		st.mode = modeHeader
	}
}

// readCodes reads a dynamic block's code lengths and builds f.lit and
// f.dist.
func (f *inflater) readCodes(src []byte, p int, b uint64, nb uint) (int, uint64, uint, bool) {
	p, b, nb = refill(src, p, b, nb)
	nlit := int(b&31) + 257
	ndist := int(b>>5&31) + 1
	nclen := int(b>>10&15) + 4
	b >>= 14
	nb -= 14
	if nlit > maxLit || ndist > maxDist {
		return p, b, nb, false
	}
	var clens [19]uint8
	for i := range nclen {
		if nb < 3 {
			p, b, nb = refill(src, p, b, nb)
		}
		clens[codeLenOrder[i]] = uint8(b & 7)
		b >>= 3
		nb -= 3
	}
	var ok bool
	if f.codeLen, ok = buildTable(f.codeLen, clens[:], 7, codeLenEntry); !ok {
		return p, b, nb, false
	}
	lens := f.lens[:nlit+ndist]
	for i := 0; i < len(lens); {
		p, b, nb = refill(src, p, b, nb)
		if p > len(src)+8 {
			return p, b, nb, false
		}
		e := f.codeLen[b&127]
		if e&kindMask != kindLit {
			return p, b, nb, false
		}
		n := uint(e & 15)
		b >>= n
		nb -= n
		sym := uint8(e >> 16)
		if sym < 16 {
			lens[i] = sym
			i++
			continue
		}
		var rep int
		var v uint8
		switch sym {
		case 16:
			if i == 0 {
				return p, b, nb, false
			}
			rep, v = 3+int(b&3), lens[i-1]
			b >>= 2
			nb -= 2
		case 17:
			rep = 3 + int(b&7)
			b >>= 3
			nb -= 3
		default:
			rep = 11 + int(b&127)
			b >>= 7
			nb -= 7
		}
		if i+rep > len(lens) {
			return p, b, nb, false
		}
		for range rep {
			lens[i] = v
			i++
		}
	}
	if lens[256] == 0 {
		return p, b, nb, false // no end of block: the block could never end
	}
	if f.lit, ok = buildTable(f.lit, lens[:nlit], litRoot, litEntry); !ok {
		return p, b, nb, false
	}
	if f.dist, ok = buildTable(f.dist, lens[nlit:], distRoot, distEntry); !ok {
		return p, b, nb, false
	}
	return p, b, nb, true
}

// memberStream decodes the deflate data of one member that is not read
// whole (another tool's: a single-member layer is one long member) from
// a reader, in a window that keeps the 32 KiB a distance may reach back,
// then checks the member's trailer.
type memberStream struct {
	f  *inflater
	st decodeState
	r  io.Reader

	in    []byte // input read ahead; st.p indexes it
	inEnd bool   // r has nothing more

	win     []byte // output window
	o       int    // end of the output in win
	emitted int    // what Read has returned of win
	crc     uint32
	size    uint32
	ended   bool  // the deflate data ended: what is left of in follows it
	read    int64 // input dropped from the front of in (for error offsets)
	err     error
}

const (
	history   = 32 << 10
	windowLen = history + 1<<20
	inLen     = 256 << 10
)

var streamPool sync.Pool

func newMemberStream(r io.Reader) *memberStream {
	m, ok := streamPool.Get().(*memberStream)
	if !ok {
		m = &memberStream{
			f:   getInflater(),
			in:  make([]byte, 0, inLen),
			win: make([]byte, windowLen+copySlack),
		}
	}
	m.reset(r)
	return m
}

// reset starts the next member, read from r.
func (m *memberStream) reset(r io.Reader) {
	m.st, m.r, m.in, m.inEnd = decodeState{}, r, m.in[:0], false
	m.o, m.emitted, m.crc, m.size, m.ended, m.read, m.err = 0, 0, 0, 0, false, 0, nil
}

func (m *memberStream) release() {
	m.r = nil
	m.st.lit, m.st.dist = nil, nil
	streamPool.Put(m)
}

// Read returns inflated bytes; io.EOF once the deflate data has ended
// (the caller then reads the trailer after rest()).
func (m *memberStream) Read(p []byte) (int, error) {
	for m.emitted == m.o {
		if m.err != nil {
			return 0, m.err
		}
		if m.ended {
			return 0, io.EOF
		}
		m.err = m.step() // after what it decoded before failing
	}
	n := copy(p, m.win[m.emitted:m.o])
	m.crc = crc32.Update(m.crc, crc32.IEEETable, p[:n])
	m.size += uint32(n)
	m.emitted += n
	return n, nil
}

// step decodes what it can into the window.
func (m *memberStream) step() (err error) {
	// As for a member read whole (see member): a bug in the decoder
	// fails this layer's decoding, it does not take kiln down.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("gzchunk: decoding failed: %v", r)
		}
	}()
	if m.o >= windowLen-maxMatch {
		// keep the history a distance may reach
		m.o = copy(m.win, m.win[m.o-history:m.o])
		m.emitted = m.o
	}
	if !m.inEnd && len(m.in)-m.st.p < headerMargin {
		if err := m.fill(); err != nil {
			return err
		}
	}
	o, res := m.f.decode(&m.st, m.in, m.inEnd, m.win, m.o, windowLen, windowLen-maxMatch)
	m.o = o
	switch res {
	case decodeEnd:
		m.ended = true
	case decodeShort:
		return io.ErrUnexpectedEOF
	case decodeBad:
		return flate.CorruptInputError(m.read + int64(m.st.p))
	}
	return nil
}

// fill moves the unread input to the front and reads more. The bytes the
// bit buffer holds stay too: a stored block's header is read again from
// the byte its bits started in.
func (m *memberStream) fill() error {
	from := m.st.p - int(m.st.nb>>3)
	n := copy(m.in[:cap(m.in)], m.in[from:])
	m.in = m.in[:n]
	m.st.p -= from
	m.read += int64(from)
	for len(m.in) < cap(m.in) && !m.inEnd {
		k, err := m.r.Read(m.in[len(m.in):cap(m.in)])
		m.in = m.in[:len(m.in)+k]
		if err == io.EOF {
			m.inEnd = true
		} else if err != nil {
			return err
		}
		if k > 0 && len(m.in) >= headerMargin {
			break
		}
	}
	return nil
}

// rest is the input read past the end of the deflate data.
func (m *memberStream) rest() []byte {
	return m.in[m.st.p-int(m.st.nb>>3):]
}

// maxMatch is the most one symbol writes.
const maxMatch = 258
