package testutil

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recorder stands in for a test: it records how SkipHost ended it.
type recorder struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recorder) Helper() {}

func (r *recorder) Skip(args ...any) {
	r.skipped, r.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestSkipHost(t *testing.T) {
	for _, tc := range []struct {
		strict       string
		skip, fail   bool
		wantInReason string
	}{
		{strict: "", skip: true},
		{strict: "0", skip: true},
		{strict: "1", fail: true, wantInReason: StrictEnv + "=1"},
	} {
		t.Run("strict="+tc.strict, func(t *testing.T) {
			t.Setenv(StrictEnv, tc.strict)
			for name, skip := range map[string]func(testing.TB){
				"SkipHost":  func(tb testing.TB) { SkipHost(tb, "needs ", "busybox") },
				"SkipHostf": func(tb testing.TB) { SkipHostf(tb, "needs %s", "busybox") },
			} {
				r := &recorder{}
				done := make(chan struct{})
				go func() {
					defer close(done)
					skip(r)
				}()
				<-done
				if r.skipped != tc.skip || r.failed != tc.fail {
					t.Errorf("%s: skipped %v failed %v, want %v %v", name, r.skipped, r.failed, tc.skip, tc.fail)
				}
				if !strings.Contains(r.msg, "needs busybox") || !strings.Contains(r.msg, tc.wantInReason) {
					t.Errorf("%s: message %q lacks the reason", name, r.msg)
				}
			}
		})
	}
}
