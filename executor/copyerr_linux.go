package executor

import (
	"errors"

	"github.com/kiln-build/kiln/executor/copier"
)

// notFoundInfo extracts a copier "source not found" error from err, so that
// the parent can rebuild the typed error from the child's report.
func notFoundInfo(err error, m *childMsg) {
	var nf *copier.NotFoundError
	if errors.As(err, &nf) {
		m.NotFound, m.ExcludedBy = nf.Path, nf.ExcludedBy
	}
}

// copierError rebuilds, in the parent, the copier error the child
// reported: the same message, and a *copier.NotFoundError for errors.As
// when the child saw one.
func copierError(m childMsg) error {
	if m.NotFound == "" {
		return errors.New(m.Error)
	}
	nf := &copier.NotFoundError{Path: m.NotFound, ExcludedBy: m.ExcludedBy}
	if nf.Error() == m.Error {
		return nf
	}
	return &wrappedError{msg: m.Error, err: nf}
}

// wrappedError is an error message from the child with the typed error it
// wrapped there.
type wrappedError struct {
	msg string
	err error
}

func (e *wrappedError) Error() string { return e.msg }
func (e *wrappedError) Unwrap() error { return e.err }
