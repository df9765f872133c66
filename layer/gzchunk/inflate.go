package gzchunk

import (
	"encoding/binary"
	"math/bits"
)

// A deflate decoder (RFC 1951) for one member held whole in memory, the
// case the Reader's workers have: the compressed bytes are all there and
// the trailer says how many bytes come out. Knowing both, it reads the
// input 64 bits at a time and writes matches 8 bytes at a time into a
// buffer of the final size, with no window to maintain and no reader
// interface in the loop; klauspost's streaming decoder, which pulls one
// byte at a time through an io.ByteReader, spends about twice as long on
// a layer. Inflating is most of the CPU time of pulling a layer.
//
// It only ever claims success for a stream klauspost's decoder accepts
// with the same output: every rule that decoder enforces (complete
// Huffman codes but for a single one-bit code, no code length repeat
// before the first length, at most 286 literal/length and 30 distance
// codes, no symbol outside those, no distance before the start, no
// stream that runs past its input) is enforced here too, and anything
// doubtful is a plain failure. On failure the Reader decodes the member
// again by streaming it through klauspost's reader, which then gives
// exactly its own output and error. The member's CRC-32 and size are
// checked against the result either way.

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
	// first canonical code of each length
	var next [maxBits + 2]uint32
	code := uint32(0)
	for l := 1; l <= maxBits; l++ {
		code = (code + uint32(count[l-1])) << 1
		next[l] = code
	}
	// A code longer than root bits goes to a subtable under its first
	// root bits; a subtable is as large as the longest code under it.
	// Codes are read least significant bit first, so a code's table
	// index is its bits reversed.
	var subBits [1 << litRoot]uint8
	var subOff [1 << litRoot]uint16 // 0: not opened yet
	mask := uint32(1)<<root - 1
	if maxLen > int(root) {
		c := next
		for _, l := range lens {
			if l == 0 {
				continue
			}
			r := bits.Reverse32(c[l]) >> (32 - uint(l))
			c[l]++
			if sb := int(l) - int(root); sb > int(subBits[r&mask]) {
				subBits[r&mask] = uint8(sb)
			}
		}
	}
	for sym, l := range lens {
		if l == 0 {
			continue
		}
		r := bits.Reverse32(next[l]) >> (32 - uint(l))
		next[l]++
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
	out := dst[:size] // what literals and short copies write
	var (
		b  uint64 // bit buffer, next bit lowest
		nb uint   // valid bits in b
		p  int    // next byte of src to load
		o  int    // next byte of dst to write
	)
	for final := false; !final; {
		p, b, nb = refill(src, p, b, nb)
		final = b&1 == 1
		typ := (b >> 1) & 3
		b >>= 3
		nb -= 3
		var lit, dist []uint32
		switch typ {
		case 0: // stored: LEN and NLEN from the next byte boundary
			q := p - int(nb>>3)
			b, nb = 0, 0
			if q+4 > len(src) {
				return nil, false
			}
			n := int(src[q]) | int(src[q+1])<<8
			if n^0xffff != int(src[q+2])|int(src[q+3])<<8 {
				return nil, false
			}
			q += 4
			if q+n > len(src) || o+n > size {
				return nil, false
			}
			o += copy(dst[o:], src[q:q+n])
			p = q + n
			continue
		case 1:
			lit, dist = fixedLit, fixedDist
		case 2:
			var ok bool
			if p, b, nb, ok = f.readCodes(src, p, b, nb); !ok {
				return nil, false
			}
			lit, dist = f.lit, f.dist
		default:
			return nil, false
		}
		// The main tables as arrays: their lookups need no bounds check.
		litMain := (*[1 << litRoot]uint32)(lit)
		distMain := (*[1 << distRoot]uint32)(dist)
		for {
			// A literal/length code takes at most 15 bits; the length's
			// extra bits, the distance code and its extra bits 33 more.
			if nb < maxBits {
				p, b, nb = refill(src, p, b, nb)
				if p > len(src)+8 {
					return nil, false // decoding zeros past the end
				}
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
				return nil, false
			}
			if nb < 33 {
				p, b, nb = refill(src, p, b, nb)
				if p > len(src)+8 {
					return nil, false
				}
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
				return nil, false
			}
			n = uint(d & 15)
			b >>= n
			nb -= n
			x = uint(d >> 4 & 15)
			back := int(d>>16) + int(b&(1<<x-1))
			b >>= x
			nb -= x
			if back > o || o+length > len(out) {
				return nil, false
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
	}
	// The stream ends within the byte it ended in; what follows must be
	// the end of src.
	if p-int(nb>>3) != len(src) || o != size {
		return nil, false
	}
	return dst[:o], true
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
