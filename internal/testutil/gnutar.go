package testutil

import (
	"bytes"
	"fmt"
)

// gnuTar writes the tar format GNU tar 1.34 writes with --numeric-owner and
// --mtime=@0, byte for byte. archive/tar cannot: it fills devmajor and
// devminor of every entry with zeros in octal, where GNU tar leaves them
// empty, and pads the archive to 1 KiB rather than to GNU tar's 10 KiB
// records. Only what the busybox fixture needs: short names, owner 0:0.
type gnuTar struct {
	buf bytes.Buffer
	err error
}

const (
	blockSize  = 512
	recordSize = 20 * blockSize
)

func (w *gnuTar) dir(name string, mode int64) { w.header(name, mode, 0, '5', "") }
func (w *gnuTar) symlink(name, target string) { w.header(name, 0o777, 0, '2', target) }
func (w *gnuTar) file(name string, mode int64, b []byte) {
	w.header(name, mode, int64(len(b)), '0', "")
	w.buf.Write(b)
	w.pad()
}

func (w *gnuTar) header(name string, mode, size int64, typ byte, link string) {
	if len(name) > 100 || len(link) > 100 {
		w.err = fmt.Errorf("tar name %q or link %q too long for a plain GNU header", name, link)
		return
	}
	var h [blockSize]byte
	copy(h[0:], name)
	copy(h[100:], fmt.Sprintf("%07o\x00", mode))
	copy(h[108:], "0000000\x00") // uid
	copy(h[116:], "0000000\x00") // gid
	copy(h[124:], fmt.Sprintf("%011o\x00", size))
	copy(h[136:], "00000000000\x00") // mtime
	h[156] = typ
	copy(h[157:], link)
	copy(h[257:], "ustar  \x00") // GNU magic and version
	// The checksum is computed with its own field read as spaces.
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
	w.buf.Write(h[:])
}

func (w *gnuTar) pad() {
	if r := w.buf.Len() % blockSize; r != 0 {
		w.buf.Write(make([]byte, blockSize-r))
	}
}

// close ends the archive with two zero blocks and pads it to a whole
// record, as GNU tar does.
func (w *gnuTar) close() ([]byte, error) {
	if w.err != nil {
		return nil, w.err
	}
	w.buf.Write(make([]byte, 2*blockSize))
	if r := w.buf.Len() % recordSize; r != 0 {
		w.buf.Write(make([]byte, recordSize-r))
	}
	return w.buf.Bytes(), nil
}
