package userns

import "testing"

func TestIsIdentity(t *testing.T) {
	tests := []struct {
		uidMap string
		want   bool
	}{
		{"         0          0 4294967295\n", true},
		{"         0       1000          1\n         1     100000      65536\n", false},
		{"         0     100000      65536\n", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := isIdentity(tt.uidMap); got != tt.want {
			t.Errorf("isIdentity(%q) = %v, want %v", tt.uidMap, got, tt.want)
		}
	}
}
