package copier

import (
	"sync"
)

// batchFiles bounds the files a directory's job holds: a directory with
// more has them copied by jobs of this many as the walk goes, so memory
// does not grow with the directory.
const batchFiles = 256

// dirBatch is the regular files of one directory not yet handed to a
// job, and the jobs already running some of them (its last job waits for
// them before it sets the directory's metadata).
type dirBatch struct {
	files []func() error
	parts sync.WaitGroup
}

// add queues a file of the directory, and hands a full batch to a job.
func (b *dirBatch) add(p *filePool, f func() error) error {
	b.files = append(b.files, f)
	if len(b.files) < batchFiles {
		return nil
	}
	files := b.files
	b.files = nil
	b.parts.Add(1)
	err := p.run(func() error {
		defer b.parts.Done()
		return runFiles(files)
	})
	if err != nil {
		b.parts.Done() // not queued
	}
	return err
}

// runFiles runs file copies in order up to the first error.
func runFiles(files []func() error) error {
	for _, f := range files {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// Options change how DoWith works; the zero value is Do.
type Options struct {
	// Workers, above 1, copies the bytes and metadata of regular files on
	// that many goroutines while the walk goes on, so that a COPY of
	// thousands of files keeps every core busy (creating an inode is most
	// of a small file's cost). The other goroutines run on other threads:
	// the caller's mount namespace and root must be the whole process's,
	// as in the copy sandbox child, never a namespace one locked thread
	// entered on its own.
	Workers int
	// Upper, when set, is the upper directory of the overlay mounted at
	// the destination, as this process sees it: what the copy puts in a
	// directory it made itself is written there directly (see direct).
	Upper string
}

// filePool runs jobs on a few goroutines: one per directory, which copies
// the directory's regular files that are their inode's only link (nothing
// later in the copy depends on them) and then sets the directory's own
// metadata (creating a file changes its times). A job owns the directory
// handles it uses. The walk waits for every job before a match ends (a
// later source may write the same names). A nil pool runs each job at
// once.
type filePool struct {
	jobs    chan func() error
	pending sync.WaitGroup
	workers sync.WaitGroup
	mu      sync.Mutex
	err     error // the first job error
}

func newFilePool(n int) *filePool {
	if n <= 1 {
		return nil
	}
	p := &filePool{jobs: make(chan func() error, 4*n)}
	p.workers.Add(n)
	for range n {
		go func() {
			defer p.workers.Done()
			for job := range p.jobs {
				if err := job(); err != nil {
					p.mu.Lock()
					if p.err == nil {
						p.err = err
					}
					p.mu.Unlock()
				}
				p.pending.Done()
			}
		}()
	}
	return p
}

// run runs job, on a worker when there is a pool. It returns the first
// error of an earlier job, so that the walk stops soon after one fails.
func (p *filePool) run(job func() error) error {
	if p == nil {
		return job()
	}
	if err := p.firstErr(); err != nil {
		return err
	}
	p.pending.Add(1)
	p.jobs <- job
	return nil
}

func (p *filePool) firstErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// wait returns once every submitted job is done, with the first error.
func (p *filePool) wait() error {
	if p == nil {
		return nil
	}
	p.pending.Wait()
	return p.firstErr()
}

// close waits for the jobs and stops the workers.
func (p *filePool) close() error {
	if p == nil {
		return nil
	}
	err := p.wait()
	close(p.jobs)
	p.workers.Wait()
	return err
}

// claim is check's first half, for a file whose content a job hashes:
// the entry must be the next one the key lists. The returned entry (nil
// when not verifying) is what checkContent compares with.
func (v *verifier) claim(rel string) (*Entry, error) {
	if v == nil {
		return nil, nil
	}
	if v.i >= len(v.expect) {
		return nil, &ContextChangedError{Path: relName(rel)}
	}
	e := &v.expect[v.i]
	v.i++
	if e.Path != rel {
		p := e.Path
		if rel < p {
			p = rel
		}
		return nil, &ContextChangedError{Path: relName(p)}
	}
	return e, nil
}
