package gzchunk

import (
	"bytes"
	stdgzip "compress/gzip"
	"testing"
)

// kilnStream returns the members of pieces, each compressed on its own,
// as the Writer does with ChunkSize pieces: small seeds with several
// members.
func kilnStream(t testing.TB, level int, pieces ...string) []byte {
	var out []byte
	for _, p := range pieces {
		var err error
		if out, err = compressMember(out, []byte(p), level); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// FuzzReader: whatever the bytes, Reader gives what klauspost's
// gzip.Reader gives: the same output and the same error.
func FuzzReader(f *testing.F) {
	text := "kiln layers are tar streams: usr/lib/x86_64-linux-gnu/ " // some repetition for the matcher
	f.Add([]byte{})
	f.Add(kilnStream(f, 6, ""))
	f.Add(kilnStream(f, 6, "a"))
	f.Add(kilnStream(f, 6, text, text+text, "z"))
	f.Add(kilnStream(f, -2, text, text))
	f.Add(kilnStream(f, 0, text, "stored", text))
	f.Add(kilnStream(f, 9, text+text+text, ""))
	var std bytes.Buffer
	zw := stdgzip.NewWriter(&std)
	zw.Write([]byte(text))
	zw.Close()
	f.Add(std.Bytes())
	f.Add(append(kilnStream(f, 1, text), std.Bytes()...))
	f.Add(append(append(std.Bytes(), kilnStream(f, 1, text, text)...), 0, 0))
	lying := kilnStream(f, 6, text, text, text)
	le.PutUint32(lying[16:20], le.Uint32(lying[16:20])+3) // the first member's length is off
	f.Add(lying)
	bad := kilnStream(f, 6, text, text)
	bad[len(bad)-5] ^= 1 // the last member's CRC
	f.Add(bad)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkSame(t, b)
	})
}

// FuzzRoundTrip: what the Writer writes reads back as written, by Reader
// and by compress/gzip.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{}, int8(6))
	f.Add([]byte("a"), int8(1))
	f.Add(bytes.Repeat([]byte("kiln "), 1000), int8(9))
	f.Fuzz(func(t *testing.T, data []byte, level int8) {
		lvl := int(uint8(level))%12 - 2 // -2 … 9
		z := compress(t, data, lvl, 1000)
		got, err := checkSame(t, z)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Reader: %d bytes back (%v), want the %d written", len(got), err, len(data))
		}
		sr, err := stdgzip.NewReader(bytes.NewReader(z))
		if err != nil {
			t.Fatalf("compress/gzip: %v", err)
		}
		var back bytes.Buffer
		if _, err := back.ReadFrom(sr); err != nil || !bytes.Equal(back.Bytes(), data) {
			t.Fatalf("compress/gzip: %d bytes back (%v), want the %d written", back.Len(), err, len(data))
		}
	})
}
