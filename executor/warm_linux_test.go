package executor

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// TestWarmStepOver: a step whose child reports it over before the kernel
// has torn its sandbox down leaves nothing running that writes to its
// layer or its log, and its cgroup is removed once the sandbox is gone.
func TestWarmStepOver(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("pasta"); err != nil {
		t.Skip("needs pasta (apt-get install passt)")
	}
	lower := busyboxRootfs(t)
	ctx := context.Background()
	w := NewWarm(ctx)
	defer w.Close()
	w.Expect(2)
	n, err := NewNetworkWarm(ctx, t.TempDir(), w, Sandbox{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for i := range 2 {
		var out bytes.Buffer
		// A writer left running in the background, to the layer and to
		// the log.
		script := "(while :; do echo x >> /bg; echo log; done) & sleep 0.05; echo end"
		spec := RunSpec{Net: n, Warm: w, Args: []string{"/bin/sh", "-c", script}, Stdout: &out, Stderr: &out}
		spec.Rootfs = newRootfs(t, lower)
		if err := Run(ctx, spec); err != nil {
			t.Fatalf("step %d: %v\n%s", i+1, err, out.String())
		}
		bg := filepath.Join(spec.Rootfs.Upper, "bg")
		before, err := os.ReadFile(bg)
		if err != nil {
			t.Fatal(err)
		}
		logged := out.Len()
		time.Sleep(100 * time.Millisecond)
		after, _ := os.ReadFile(bg)
		if len(after) != len(before) {
			t.Errorf("step %d: /bg grew from %d to %d bytes after the step was over", i+1, len(before), len(after))
		}
		if out.Len() != logged {
			t.Errorf("step %d: the log grew from %d to %d bytes after the step was over", i+1, logged, out.Len())
		}
		if !strings.Contains(out.String(), "end\n") {
			t.Errorf("step %d: log %q lacks the command's last line", i+1, out.String())
		}
	}
	w.Close()
	assertNoStepCgroups(t, needCgroups(t))
}
