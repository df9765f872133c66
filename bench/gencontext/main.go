// Command gencontext writes the build context of the 10,000-file benchmark:
// text files of English-like word soup (compressing about 3x, like source
// trees do) spread over 100 directories. The same flags always give the same
// bytes, so kiln and BuildKit build identical contexts run after run.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	dir := flag.String("dir", "", "directory to fill (created; existing files are overwritten)")
	files := flag.Int("files", 10000, "number of files")
	total := flag.Int64("bytes", 120<<20, "approximate total size")
	flag.Parse()
	if *dir == "" || *files <= 0 {
		fmt.Fprintln(os.Stderr, "usage: gencontext -dir DIR [-files N] [-bytes N]")
		os.Exit(2)
	}
	if err := generate(*dir, *files, *total); err != nil {
		fmt.Fprintln(os.Stderr, "gencontext:", err)
		os.Exit(1)
	}
}

func generate(dir string, files int, total int64) error {
	words := strings.Fields(`the of and to in is for on that by this with from as are be it at or an
		layer image file build run copy kiln overlay tar gzip zstd cache step func return error nil if
		else struct type package import var const string int byte 0 1 2 42 1024 0x7f config main test`)
	rng := rand.New(rand.NewPCG(1, 2))
	avg := total / int64(files)
	for i := range files {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%100))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		// sizes spread from half to one and a half times the average
		size := avg/2 + rng.Int64N(avg+1)
		f, err := os.Create(filepath.Join(sub, fmt.Sprintf("f%05d.txt", i)))
		if err != nil {
			return err
		}
		w := bufio.NewWriterSize(f, 64<<10)
		for n := int64(0); n < size; {
			word := words[rng.IntN(len(words))]
			w.WriteString(word)
			w.WriteByte(" \n"[rng.IntN(8)/7])
			n += int64(len(word)) + 1
		}
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}
