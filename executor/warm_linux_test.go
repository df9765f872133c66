package executor

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
)

// TestWarm: the first steps of a build find children started during the
// network's set-up, later ones children started while the step before
// ran, and no more children are started than steps are expected.
func TestWarm(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("pasta"); err != nil {
		t.Skip("needs pasta (apt-get install passt)")
	}
	lower := busyboxRootfs(t)
	ctx := context.Background()
	w := NewWarm(ctx)
	defer w.Close()
	const steps = 4
	w.Expect(steps)
	n, err := NewNetworkWarm(ctx, t.TempDir(), w, Sandbox{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	queued := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.queue)
	}
	if got := queued(); got != warmDepth {
		t.Fatalf("%d children started with the network, want %d", got, warmDepth)
	}
	for i := range steps {
		var out bytes.Buffer
		spec := RunSpec{Net: n, Warm: w, Args: []string{"/bin/sh", "-c", "echo step; cat /proc/1/cmdline"}, Stdout: &out, Stderr: &out}
		spec.Rootfs = newRootfs(t, lower)
		w.mu.Lock()
		var want *warmChild
		if len(w.queue) > 0 {
			want = w.queue[0]
		}
		w.mu.Unlock()
		if want == nil {
			t.Fatalf("step %d: no child started ahead", i+1)
		}
		if err := Run(ctx, spec); err != nil {
			t.Fatalf("step %d: %v\n%s", i+1, err, out.String())
		}
		if !strings.HasPrefix(out.String(), "step\n") {
			t.Fatalf("step %d printed %q", i+1, out.String())
		}
		w.mu.Lock()
		for _, wc := range w.queue {
			if wc == want {
				t.Errorf("step %d did not take the child started ahead of it", i+1)
			}
		}
		w.mu.Unlock()
		if got, left := queued(), steps-(i+1); got != min(left, warmDepth) {
			t.Errorf("after step %d: %d children started ahead, want %d (steps left: %d)", i+1, got, min(left, warmDepth), left)
		}
	}
}
