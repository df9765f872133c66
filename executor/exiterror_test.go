package executor

import "testing"

func TestExitErrorMessage(t *testing.T) {
	tests := []struct {
		err  ExitError
		want string
	}{
		{ExitError{Code: 2}, "exit code 2"},
		{ExitError{Code: 137, Signal: "KILL"}, "killed by signal KILL"},
		{ExitError{Code: 127, Reason: `exec: "foo": executable file not found in $PATH`}, `exec: "foo": executable file not found in $PATH: exit code 127`},
		{ExitError{Code: 137, Signal: "KILL", Killed: true, Reason: "out of memory (limit 64 MiB)"}, "killed: out of memory (limit 64 MiB)"},
		{ExitError{Code: 2, PidsLimit: 64}, "exit code 2 (the step reached its limit of 64 processes, --pids-limit)"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.err, got, tt.want)
		}
	}
}
