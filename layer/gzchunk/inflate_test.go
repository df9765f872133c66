package gzchunk

import (
	"bytes"
	stdgzip "compress/gzip"
	"io"
	"math/bits"
	"math/rand"
	"testing"

	"github.com/klauspost/compress/flate"
)

// klauspostInflate decodes b as one raw deflate stream and says how many
// bytes of b it read.
func klauspostInflate(b []byte) ([]byte, int, error) {
	r := bytes.NewReader(b)
	out, err := io.ReadAll(flate.NewReader(r))
	return out, len(b) - r.Len(), err
}

// checkInflate: the fast decoder succeeds only where klauspost's reads
// all of b without error, and then with the same output.
func checkInflate(t testing.TB, b []byte) bool {
	t.Helper()
	want, read, err := klauspostInflate(b)
	f := newInflater()
	sizes := []int{len(want), len(want) + 1}
	if len(want) > 0 {
		sizes = append(sizes, len(want)-1)
	}
	ok := false
	for _, size := range sizes {
		got, gotOK := f.inflate(make([]byte, 0, size+copySlack), b, size)
		if !gotOK {
			continue
		}
		if err != nil || read != len(b) || size != len(want) {
			t.Fatalf("fast decoder accepts %x (size %d); klauspost: %d bytes out, %d of %d read, %v", b, size, len(want), read, len(b), err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("fast decoder output differs at %d of %d", firstDiff(got, want), len(want))
		}
		ok = true
	}
	return ok
}

// bitWriter writes deflate's LSB-first bit stream.
type bitWriter struct {
	out  []byte
	acc  uint64
	nacc uint
}

func (w *bitWriter) bits(v uint64, n uint) {
	w.acc |= v << w.nacc
	w.nacc += n
	for w.nacc >= 8 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		w.nacc -= 8
	}
}

// code writes a Huffman code, most significant bit first.
func (w *bitWriter) code(c uint32, n uint8) {
	w.bits(uint64(bits.Reverse32(c)>>(32-uint(n))), uint(n))
}

func (w *bitWriter) bytes() []byte {
	if w.nacc > 0 {
		w.out = append(w.out, byte(w.acc))
		w.acc, w.nacc = 0, 0
	}
	return w.out
}

// canonical returns the canonical codes of lens.
func canonical(lens []uint8) []uint32 {
	var count [16]uint32
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	var next [16]uint32
	for l, c := 1, uint32(0); l < 16; l++ {
		c = (c + count[l-1]) << 1
		next[l] = c
	}
	codes := make([]uint32, len(lens))
	for s, l := range lens {
		if l > 0 {
			codes[s] = next[l]
			next[l]++
		}
	}
	return codes
}

// sym is one literal/length symbol to write, with its extra bits, and a
// distance when it is a length.
type sym struct {
	lit        int
	extra      uint64
	dist       int
	distExtra  uint64
	extraBits  uint
	distXBits  uint
	hasDistSym bool
}

// dynamicBlock writes one dynamic block with the given code lengths
// (each written literally, the code length code being 4 bits for 0-12
// and 5 bits for the rest: complete) and symbols.
func dynamicBlock(w *bitWriter, final bool, litLens, distLens []uint8, syms []sym) {
	f := uint64(0)
	if final {
		f = 1
	}
	w.bits(f, 1)
	w.bits(2, 2)
	w.bits(uint64(len(litLens)-257), 5)
	w.bits(uint64(len(distLens)-1), 5)
	w.bits(19-4, 4)
	var clens [19]uint8
	for s := range clens {
		clens[s] = 4
		if s > 12 {
			clens[s] = 5
		}
	}
	for _, s := range codeLenOrder {
		w.bits(uint64(clens[s]), 3)
	}
	cc := canonical(clens[:])
	for _, l := range append(append([]uint8{}, litLens...), distLens...) {
		w.code(cc[l], clens[l])
	}
	lc, dc := canonical(litLens), canonical(distLens)
	for _, s := range syms {
		w.code(lc[s.lit], litLens[s.lit])
		w.bits(s.extra, s.extraBits)
		if s.hasDistSym {
			w.code(dc[s.dist], distLens[s.dist])
			w.bits(s.distExtra, s.distXBits)
		}
	}
}

// flatLens gives n symbols equal lengths for a complete code (n a power
// of two), or n-1 of them and makes the last two one bit longer.
func flatLens(n int) []uint8 {
	l := uint8(bits.Len(uint(n - 1)))
	lens := make([]uint8, n)
	for i := range lens {
		lens[i] = l
	}
	// complete it: 2^l - n codes are missing; shorten some
	for missing := (1 << l) - n; missing > 0; missing-- {
		lens[missing-1]--
	}
	return lens
}

func TestInflateHandmade(t *testing.T) {
	lit := flatLens(286)
	lit257 := flatLens(257)
	dist := flatLens(30)
	hello := []sym{{lit: 'h'}, {lit: 'i'}, {lit: 257, hasDistSym: true, dist: 1}, {lit: 256}}
	cases := map[string]struct {
		b      func() []byte
		accept bool
	}{
		"dynamic": {func() []byte {
			var w bitWriter
			dynamicBlock(&w, true, lit, dist, hello)
			return w.bytes()
		}, true},
		"no distance codes, literals only": {func() []byte {
			var w bitWriter
			dynamicBlock(&w, true, lit257, []uint8{0}, []sym{{lit: 'a'}, {lit: 256}})
			return w.bytes()
		}, false}, // klauspost's rule decides; see below
		"one distance code of one bit": {func() []byte {
			var w bitWriter
			dynamicBlock(&w, true, lit, []uint8{0, 1}, []sym{{lit: 'a'}, {lit: 'b'}, {lit: 257, hasDistSym: true, dist: 1}, {lit: 256}})
			return w.bytes()
		}, true},
		"incomplete distance code": {func() []byte {
			var w bitWriter
			dynamicBlock(&w, true, lit, []uint8{2, 2, 2}, hello[:2])
			return w.bytes()
		}, false},
		"distance before the start": {func() []byte {
			var w bitWriter
			dynamicBlock(&w, true, lit, dist, []sym{{lit: 'x'}, {lit: 257, hasDistSym: true, dist: 2}, {lit: 256}})
			return w.bytes()
		}, false},
		"two blocks, not final then final": {func() []byte {
			var w bitWriter
			dynamicBlock(&w, false, lit, dist, hello)
			dynamicBlock(&w, true, lit, dist, append([]sym{{lit: 'x'}}, hello[2:]...))
			return w.bytes()
		}, true},
		"stored then fixed": {func() []byte {
			var w bitWriter
			w.bits(0, 3) // stored, not final
			b := append(w.bytes(), 3, 0, 0xfc, 0xff, 'a', 'b', 'c')
			w = bitWriter{out: b}
			w.bits(1, 1)
			w.bits(1, 2) // fixed
			w.code(0x30+'z', 8)
			w.code(0, 7) // end of block
			return w.bytes()
		}, true},
		"stored with a bad NLEN": {func() []byte {
			return []byte{1, 3, 0, 0xfc, 0xfe, 'a', 'b', 'c'}
		}, false},
		"fixed distance code 30": {func() []byte {
			var w bitWriter
			w.bits(1, 1)
			w.bits(1, 2)
			w.code(0x30+'z', 8)
			w.code(1, 7)  // length 3
			w.code(30, 5) // no such distance
			w.code(0, 7)
			return w.bytes()
		}, false},
		"reserved block type": {func() []byte { return []byte{7} }, false},
		"trailing byte": {func() []byte {
			var w bitWriter
			dynamicBlock(&w, true, lit, dist, hello)
			return append(w.bytes(), 0)
		}, false},
		"truncated": {func() []byte {
			var w bitWriter
			dynamicBlock(&w, true, lit, dist, hello)
			b := w.bytes()
			return b[:len(b)-1]
		}, false},
	}
	for name, c := range cases {
		b := c.b()
		_, read, err := klauspostInflate(b)
		kp := err == nil && read == len(b)
		if name != "no distance codes, literals only" && kp != c.accept {
			t.Errorf("%s: klauspost accepts: %v, the case expects %v (%v)", name, kp, c.accept, err)
		}
		if got := checkInflate(t, b); got != kp {
			t.Errorf("%s: fast decoder accepts: %v, klauspost: %v", name, got, kp)
		}
	}
}

// TestInflateLevels: members of every level over text, binary-like and
// random data decode with the fast decoder, as klauspost decodes them.
func TestInflateLevels(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	random := make([]byte, 200<<10)
	rng.Read(random)
	var text, mixed bytes.Buffer
	for i := range 20000 {
		text.WriteString("usr/lib/x86_64-linux-gnu/libfoo.so.")
		text.WriteByte(byte('0' + i%10))
		mixed.Write(random[i%1000 : i%1000+rng.Intn(40)])
		mixed.WriteString("\x00\x00\x00\x01ELF")
	}
	for _, data := range [][]byte{nil, {'a'}, text.Bytes(), mixed.Bytes(), random, bytes.Repeat([]byte{0}, 300000)} {
		for lvl := -2; lvl <= 9; lvl++ {
			m, err := compressMember(nil, data, lvl)
			if err != nil {
				t.Fatal(err)
			}
			if !checkInflate(t, m[headerLen:len(m)-trailerLen]) {
				t.Errorf("level %d, %d bytes: the fast decoder fell back", lvl, len(data))
			}
		}
	}
}

// FuzzInflate: whatever the bytes, the fast decoder either fails or gives
// what klauspost's decoder gives, having read them all.
func FuzzInflate(f *testing.F) {
	text := []byte("kiln layers are tar streams: usr/lib/x86_64-linux-gnu/ usr/lib/x86_64-linux-gnu/")
	for _, lvl := range []int{-2, 0, 1, 5, 9} {
		m, _ := compressMember(nil, text, lvl)
		f.Add(m[headerLen : len(m)-trailerLen])
	}
	f.Add([]byte{1, 3, 0, 0xfc, 0xff, 'a', 'b', 'c'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkInflate(t, b)
	})
}

// TestStreamedMembers: another tool's members, decoded by streaming in a
// window (larger than it, with stored blocks longer than the input
// buffer, several members, header fields), read as klauspost reads them.
func TestStreamedMembers(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	random := make([]byte, 3<<20)
	rng.Read(random)
	var text bytes.Buffer
	for text.Len() < 3<<20 {
		text.WriteString("usr/share/doc/kiln/changelog.Debian.gz ")
		text.Write(random[:rng.Intn(64)])
	}
	for _, data := range [][]byte{nil, []byte("a"), text.Bytes(), random, bytes.Repeat([]byte{0}, 5<<20)} {
		for _, lvl := range []int{stdgzip.NoCompression, stdgzip.BestSpeed, stdgzip.DefaultCompression, stdgzip.HuffmanOnly} {
			var b bytes.Buffer
			zw, _ := stdgzip.NewWriterLevel(&b, lvl)
			zw.Name, zw.Comment, zw.Extra = "layer.tar", "kiln", []byte{'x', 'y', 2, 0, 1, 2}
			zw.Write(data)
			zw.Close()
			one := b.Bytes()
			got, err := checkSame(t, one)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("level %d, %d bytes: %v", lvl, len(data), err)
			}
			two := append(append([]byte{}, one...), one...)
			if got, err := checkSame(t, two); err != nil || len(got) != 2*len(data) {
				t.Fatalf("level %d, two members: %v", lvl, err)
			}
		}
	}
}
