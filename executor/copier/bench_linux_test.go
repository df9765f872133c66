package copier

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// BenchmarkCopy10k copies a context of 10,000 files of 12 KB in 100
// directories, with a .dockerignore, the shape a large COPY . has.
func BenchmarkCopy10k(b *testing.B) { benchCopy10k(b, false, Options{}) }

// BenchmarkCopy10kVerified is the same copy checked against its key, as a
// COPY from the build context runs.
func BenchmarkCopy10kVerified(b *testing.B) { benchCopy10k(b, true, Options{}) }

// BenchmarkCopy10kWorkers is the verified copy with files copied on every
// core, as the copy sandbox child runs it.
func BenchmarkCopy10kWorkers(b *testing.B) {
	benchCopy10k(b, true, Options{Workers: runtime.GOMAXPROCS(0)})
}

func benchCopy10k(b *testing.B, verify bool, opt Options) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: the copier sets owners")
	}
	src := b.TempDir()
	for d := 0; d < 100; d++ {
		dir := filepath.Join(src, fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := 0; f < 100; f++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.txt", f)), bytes.Repeat([]byte("hello world\n"), 1000), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	op := Op{Kind: "copy", Sources: []string{"."}, Dest: "/app/", Excludes: []string{"*.log", ".git"}}
	if verify {
		op.Verify, op.Expect = true, expectedEntries(b, src, op.Sources, op.Excludes)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dst := filepath.Join(b.TempDir(), "dst")
		if err := os.Mkdir(dst, 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := DoWith(src, dst, op, opt); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSelect10k is what the build cache hashes before that copy.
func BenchmarkSelect10k(b *testing.B) {
	src := b.TempDir()
	for d := 0; d < 100; d++ {
		dir := filepath.Join(src, fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := 0; f < 100; f++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.txt", f)), bytes.Repeat([]byte("hello world\n"), 1000), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	for i := 0; i < b.N; i++ {
		n := 0
		if err := Select(src, []string{"."}, []string{"*.log", ".git"}, func(string, string, os.FileInfo) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
