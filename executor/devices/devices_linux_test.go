package devices

import "testing"

func TestRuleV1(t *testing.T) {
	tests := []struct {
		rule Rule
		want string
	}{
		{Rule{'c', -1, -1, "m"}, "c *:* m"},
		{Rule{'b', -1, -1, "m"}, "b *:* m"},
		{Rule{'c', 1, 3, "rwm"}, "c 1:3 rwm"},
		{Rule{'c', 136, -1, "rwm"}, "c 136:* rwm"},
	}
	for _, tt := range tests {
		if got := tt.rule.V1(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.rule, got, tt.want)
		}
	}
}

func TestFilterAssembles(t *testing.T) {
	prog, err := filter(Default)
	if err != nil {
		t.Fatal(err)
	}
	if len(prog) == 0 || len(prog) > 4096 {
		t.Errorf("filter has %d instructions", len(prog))
	}
}
