package gzchunk

import (
	"bytes"
	stdgzip "compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os/exec"
	"runtime"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"

	"github.com/kiln-build/kiln/internal/testutil"
)

// testData returns n bytes that compress like a layer: runs of random
// bytes between runs of repeated text.
func testData(n int, seed int64) []byte {
	rng := rand.New(rand.NewSource(seed))
	b := make([]byte, 0, n)
	words := []string{"usr/lib/", "share/doc/", "copyright\n", "#include <stdio.h>\n", "\x00\x00\x00\x00", "func main() {\n", "0000644\x000000000\x00"}
	for len(b) < n {
		if rng.Intn(3) == 0 {
			r := make([]byte, rng.Intn(4096))
			rng.Read(r)
			b = append(b, r...)
			continue
		}
		for range rng.Intn(200) {
			b = append(b, words[rng.Intn(len(words))]...)
		}
	}
	return b[:n]
}

// compress writes data through a Writer in writes of ws bytes.
func compress(t testing.TB, data []byte, level, ws int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := NewWriter(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; {
		n := min(ws, len(p))
		if _, err := zw.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// decodeOurs reads b to its end with Reader.
func decodeOurs(b []byte) ([]byte, error) {
	zr, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return io.ReadAll(zr)
}

// decodeKlauspost reads b to its end with klauspost's gzip.Reader: the
// oracle.
func decodeKlauspost(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return io.ReadAll(zr)
}

// checkSame fails unless Reader and klauspost's gzip.Reader make the same
// bytes and the same error of b. Where both find bad deflate data, two
// things may differ: the error (the offset of corrupt data, or corrupt
// data against a stream cut short: the decoders read ahead differently),
// and how much output comes before the failure: ours may stop short of
// klauspost's (it refuses a block without an end-of-block code at its
// header, which klauspost's decoder decodes until the input runs out),
// and either may have the last symbol's bytes the other has not
// (klauspost's decoder wants as many bits as the end-of-block code takes
// before it looks up any symbol).
func checkSame(t testing.TB, b []byte) ([]byte, error) {
	t.Helper()
	got, gotErr := decodeOurs(b)
	want, wantErr := decodeKlauspost(b)
	if !(badDeflate(gotErr) && badDeflate(wantErr)) && fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Fatalf("error: got %v, klauspost gzip says %v", gotErr, wantErr)
	}
	if gotErr != nil && firstDiff(got, want) == min(len(got), len(want)) && len(got)-len(want) <= maxMatch {
		return got, gotErr // one is a prefix of the other
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output: got %d bytes, klauspost gzip gives %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
	}
	return got, gotErr
}

// badDeflate says whether err is one of the two errors of bad deflate
// data: corrupt, or cut short. Which one a decoder sees first near the end
// of a member depends on how far ahead it reads.
func badDeflate(err error) bool {
	var corrupt flate.CorruptInputError
	return errors.As(err, &corrupt) || errors.Is(err, io.ErrUnexpectedEOF)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// parallelMembers reads b with a Reader and returns how many members
// its workers inflated.
func parallelMembers(t testing.TB, b []byte) int {
	t.Helper()
	zr, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if _, err := io.Copy(io.Discard, zr); err != nil {
		t.Fatal(err)
	}
	return zr.parallel
}

// members walks the kiln members of b by their declared lengths.
func members(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var ms [][]byte
	for len(b) > 0 {
		n, ok := memberLen(b)
		if !ok || n > len(b) {
			t.Fatalf("member %d: no kiln header with a length inside the stream", len(ms))
		}
		ms = append(ms, b[:n])
		b = b[n:]
	}
	return ms
}

var sizes = []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 10*ChunkSize + 12345}

func TestRoundTrip(t *testing.T) {
	gzipBin, _ := exec.LookPath("gzip")
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			data := testData(n, int64(n))
			z := compress(t, data, flate.DefaultCompression, 100_000)

			wantMembers := max(1, (n+ChunkSize-1)/ChunkSize)
			if got := len(members(t, z)); got != wantMembers {
				t.Errorf("%d members, want %d", got, wantMembers)
			}
			got, err := checkSame(t, z)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Reader: %d bytes back (%v), want the %d written", len(got), err, n)
			}
			if p := parallelMembers(t, z); p != wantMembers {
				t.Errorf("%d members inflated by the workers, want all %d", p, wantMembers)
			}

			sr, err := stdgzip.NewReader(bytes.NewReader(z))
			if err != nil {
				t.Fatalf("compress/gzip: %v", err)
			}
			if got, err := io.ReadAll(sr); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("compress/gzip: %d bytes back (%v), want the %d written", len(got), err, n)
			}

			if gzipBin == "" {
				testutil.SkipHost(t, "no gzip binary on PATH (install gzip)")
			}
			cmd := exec.Command(gzipBin, "-d", "-c")
			cmd.Stdin = bytes.NewReader(z)
			out, err := cmd.Output()
			if err != nil || !bytes.Equal(out, data) {
				t.Fatalf("gzip -d: %d bytes back (%v), want the %d written", len(out), err, n)
			}
		})
	}
}

// TestDeterministic: the bytes depend on the input and the level only.
func TestDeterministic(t *testing.T) {
	data := testData(5*ChunkSize+777, 5)
	for _, level := range []int{flate.HuffmanOnly, flate.BestSpeed, flate.DefaultCompression, flate.BestCompression} {
		var want []byte
		for _, procs := range []int{1, 2, 8} {
			for _, ws := range []int{1 << 20, 4093, 3 << 20} {
				prev := runtime.GOMAXPROCS(procs)
				got := compress(t, data, level, ws)
				runtime.GOMAXPROCS(prev)
				if want == nil {
					want = got
				} else if !bytes.Equal(got, want) {
					t.Fatalf("level %d, GOMAXPROCS %d, writes of %d: output differs", level, procs, ws)
				}
			}
		}
	}
}

func TestWriterLevel(t *testing.T) {
	for _, level := range []int{-3, 10, -32768} {
		if _, err := NewWriter(io.Discard, level); err == nil {
			t.Errorf("level %d: no error", level)
		}
	}
}

// TestMixed: a stream of kiln members, members of other tools and a
// member that is not kiln's but carries an extra field reads as the
// concatenation of them all.
func TestMixed(t *testing.T) {
	a, b := testData(3*ChunkSize+5, 1), testData(100_000, 2)
	var other bytes.Buffer
	zw := stdgzip.NewWriter(&other)
	zw.Name = "x"
	zw.Extra = []byte{'K', 'C', 4, 0, 1, 2, 3, 4}
	zw.Write(b)
	zw.Close()
	stream := append(append(append(compress(t, a, 6, 1<<20), other.Bytes()...), compress(t, b, 1, 1<<20)...), other.Bytes()...)
	got, err := checkSame(t, stream)
	want := append(append(append(append([]byte{}, a...), b...), b...), b...)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes (%v), want %d", len(got), err, len(want))
	}
}

// mutate returns a copy of the 5-member stream z with f applied to its
// middle member.
func mutate(t *testing.T, z []byte, f func(m []byte) []byte) []byte {
	ms := members(t, z)
	var out []byte
	for i, m := range ms {
		if i == len(ms)/2 {
			m = f(bytes.Clone(m))
		}
		out = append(out, m...)
	}
	return out
}

// TestCorruptMember: damage in a middle member is an error, the same one
// klauspost's reader gives, after the same bytes.
func TestCorruptMember(t *testing.T) {
	z := compress(t, testData(5*ChunkSize, 9), 6, 1<<20)
	for _, tc := range []struct {
		name string
		f    func(m []byte) []byte
		want error
	}{
		{"crc", func(m []byte) []byte { m[len(m)-8] ^= 1; return m }, gzip.ErrChecksum},
		{"isize", func(m []byte) []byte { m[len(m)-1] ^= 1; return m }, gzip.ErrChecksum},
		{"deflate data", func(m []byte) []byte { m[len(m)/2] ^= 0x55; return m }, nil},
		{"magic", func(m []byte) []byte { m[0] = 0; return m }, gzip.ErrHeader},
		{"truncated member", func(m []byte) []byte { return m[:len(m)-100] }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkSame(t, mutate(t, z, tc.f))
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("truncated stream", func(t *testing.T) {
		for _, cut := range []int{1, 9, 19, 20, 21, 100, len(z) / 2, len(z) - 8, len(z) - 1} {
			if _, err := checkSame(t, z[:cut]); err == nil {
				t.Fatalf("cut at %d: no error", cut)
			}
		}
	})
	t.Run("trailing bytes", func(t *testing.T) {
		for _, tail := range [][]byte{{0}, make([]byte, 512), []byte("garbage"), {0x1f, 0x8b}} {
			if _, err := checkSame(t, append(bytes.Clone(z), tail...)); err == nil {
				t.Fatalf("tail %q: no error", tail)
			}
		}
	})
}

// TestLyingLength: a declared member length that does not hold never
// changes what is read, only how.
func TestLyingLength(t *testing.T) {
	data := testData(5*ChunkSize, 11)
	z := compress(t, data, 6, 1<<20)
	set := func(n uint32) func(m []byte) []byte {
		return func(m []byte) []byte { le.PutUint32(m[16:20], n); return m }
	}
	add := func(d int) func(m []byte) []byte {
		return func(m []byte) []byte { le.PutUint32(m[16:20], uint32(len(m)+d)); return m }
	}
	for _, tc := range []struct {
		name string
		f    func(m []byte) []byte
	}{
		{"one short", add(-1)},
		{"one long", add(1)},
		{"short by a member", add(-ChunkSize / 2)},
		{"spans the next member", add(ChunkSize / 2)},
		{"below a header", set(5)},
		{"zero", set(0)},
		{"over the bound", set(maxMember + 1)},
		{"huge", set(0xffffffff)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := checkSame(t, mutate(t, z, tc.f))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes (%v), want the %d written", len(got), err, len(data))
			}
		})
	}
	t.Run("others still parallel", func(t *testing.T) {
		if p := parallelMembers(t, mutate(t, z, add(1))); p != 4 {
			t.Fatalf("%d members inflated by the workers, want the 4 that do not lie", p)
		}
	})
	t.Run("every member lies", func(t *testing.T) {
		ms := members(t, z)
		var out []byte
		for _, m := range ms {
			m = bytes.Clone(m)
			le.PutUint32(m[16:20], uint32(len(m)+7))
			out = append(out, m...)
		}
		got, err := checkSame(t, out)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("got %d bytes (%v), want the %d written", len(got), err, len(data))
		}
	})
	t.Run("bomb", func(t *testing.T) {
		// A small kiln-labelled member that inflates past the bound is
		// streamed, not buffered whole: same bytes as klauspost.
		var m []byte
		big := make([]byte, 3*maxMember)
		m, err := compressMember(m, big, 9)
		if err != nil {
			t.Fatal(err)
		}
		got, err := checkSame(t, m)
		if err != nil || len(got) != len(big) {
			t.Fatalf("got %d bytes (%v), want %d", len(got), err, len(big))
		}
	})
}

func TestEmptyInputErrors(t *testing.T) {
	for _, b := range [][]byte{nil, {0x1f}, {0x1f, 0x8b, 8, 4}, []byte("not gzip at all")} {
		_, err := NewReader(bytes.NewReader(b))
		_, want := gzip.NewReader(bytes.NewReader(b))
		if fmt.Sprint(err) != fmt.Sprint(want) {
			t.Errorf("%q: NewReader error %v, klauspost gzip says %v", b, err, want)
		}
	}
}

// TestReaderStopsAtEnd: reading to io.EOF leaves nothing of the
// underlying reader unread, and Close after a partial read returns.
func TestReaderClose(t *testing.T) {
	z := compress(t, testData(4*ChunkSize, 3), 6, 1<<20)
	zr, err := NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(zr, make([]byte, ChunkSize+5)); err != nil {
		t.Fatal(err)
	}
	if err := zr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := zr.Read(make([]byte, 10)); err == nil {
		t.Fatal("read after Close: no error")
	}
}

// TestIncompressibleStored: a chunk of random bytes is stored, not
// deflated (its member is the input plus framing), and reads back; a
// compressible chunk still shrinks.
func TestIncompressibleStored(t *testing.T) {
	random := make([]byte, ChunkSize)
	if _, err := rand.New(rand.NewSource(1)).Read(random); err != nil {
		t.Fatal(err)
	}
	text := bytes.Repeat([]byte("kiln builds images; "), ChunkSize/20)
	for _, tc := range []struct {
		name   string
		in     []byte
		stored bool
	}{
		{"random", random, true},
		{"text", text, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := incompressible(tc.in); got != tc.stored {
				t.Errorf("incompressible: %v, want %v", got, tc.stored)
			}
			var buf bytes.Buffer
			w, err := NewWriter(&buf, flate.DefaultCompression)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(tc.in); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			overhead := buf.Len() - len(tc.in)
			if tc.stored && (overhead < 0 || overhead > len(tc.in)/100) {
				t.Errorf("random chunk: %d bytes out of %d, want it stored", buf.Len(), len(tc.in))
			}
			if !tc.stored && buf.Len() > len(tc.in)/10 {
				t.Errorf("text chunk: %d bytes out of %d, want it deflated", buf.Len(), len(tc.in))
			}
			r, err := NewReader(&buf)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.in) {
				t.Error("round trip changed the bytes")
			}
		})
	}
}
