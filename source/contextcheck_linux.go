package source

import (
	"archive/tar"
	"io"
)

// checkEntries returns a reader of tr's bytes that also hands them to a
// second tar reader calling check on each header. wait, called once the
// returned reader is done with, closes that side and returns check's
// error (or the archive's). An error of check fails the next read, so
// the unpacking stops at the entry.
func checkEntries(tr io.Reader, check func(*tar.Header) error) (io.Reader, func() error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := func() error {
			hr := tar.NewReader(pr)
			for {
				hdr, err := hr.Next()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				if err := check(hdr); err != nil {
					return err
				}
			}
		}()
		if err != nil {
			pr.CloseWithError(err)
		} else {
			// the padding after the end-of-archive marker: the tee
			// must never block on it
			io.Copy(io.Discard, pr)
		}
		done <- err
	}()
	return io.TeeReader(tr, pw), func() error {
		pw.Close()
		return <-done
	}
}
