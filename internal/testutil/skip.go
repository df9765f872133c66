package testutil

import (
	"fmt"
	"os"
	"testing"
)

// StrictEnv names the environment variable that, set to 1, turns every
// SkipHost into a failure. CI sets it (.ci/run): a CI machine that lacks
// a package or a kernel feature must fail, not pass with tests skipped.
const StrictEnv = "KILN_TEST_STRICT"

// Strict reports whether host skips fail (KILN_TEST_STRICT=1).
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// SkipHost skips a test this host cannot run: it lacks root, a package, a
// kernel feature or a device. Under KILN_TEST_STRICT=1 the test fails
// instead, with the same reason. Skips that are not about the host
// (testing.Short, a feature not written yet) call t.Skip directly.
func SkipHost(t testing.TB, args ...any) {
	t.Helper()
	skipHost(t, fmt.Sprint(args...))
}

// SkipHostf is SkipHost with a format.
func SkipHostf(t testing.TB, format string, args ...any) {
	t.Helper()
	skipHost(t, fmt.Sprintf(format, args...))
}

func skipHost(t testing.TB, reason string) {
	t.Helper()
	if Strict() {
		t.Fatalf("%s=1, and this host cannot run the test (install what .ci/run installs, run as root, or unset %[1]s): %s", StrictEnv, reason)
	}
	t.Skip(reason)
}
