package stepinit

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// StubPlan is what a RUN step's init found out about its mount points on
// a read-only view of the image's layers (the probe): which of them the
// image lacks, and so which entries the stub layer holds. The parent
// hands it to the next step on the same layers plus new ones that hold
// none of Names at their root (executor.StubCache): that step skips the
// probe, an overlay mount and a walk per mount point.
type StubPlan struct {
	// Targets are the mount points, "d:" or "f:" (a directory or a file)
	// and the path as given: a step with other mount points probes.
	Targets []string `json:"targets"`
	// Names are the first components of the targets. No target's
	// resolution followed a symlink (a plan is only made then), so a
	// layer without these names at its root changes nothing below them.
	Names []string `json:"names"`
	// Stubs are the stub layer's entries, parents first.
	Stubs []Stub `json:"stubs,omitempty"`
}

// Stub is one entry of the stub layer.
type Stub struct {
	Rel string `json:"rel"` // relative to the root, clean
	Dir bool   `json:"dir,omitempty"`
	// Lower: a directory the image has, whose owner, mode and times the
	// stub copies (it becomes the merged view's, and what a copy-up
	// writes into the layer).
	Lower bool   `json:"lower,omitempty"`
	Mode  uint32 `json:"mode,omitempty"`
	UID   uint32 `json:"uid,omitempty"`
	GID   uint32 `json:"gid,omitempty"`
	Atime int64  `json:"atime,omitempty"` // nanoseconds
	Mtime int64  `json:"mtime,omitempty"`
}

// targetKey names a mount point in StubPlan.Targets.
func targetKey(m rootMount) string {
	if m.dir {
		return "d:" + m.target
	}
	return "f:" + m.target
}

// reusable reports whether p was made for exactly these mount points.
func (p *StubPlan) reusable(mounts []rootMount) bool {
	if p == nil || len(p.Targets) != len(mounts) {
		return false
	}
	for i, m := range mounts {
		if p.Targets[i] != targetKey(m) {
			return false
		}
	}
	for _, s := range p.Stubs {
		if !filepath.IsLocal(s.Rel) || filepath.Clean(s.Rel) != s.Rel {
			return false
		}
	}
	return true
}

// planStubs decides the stub layer's entries on view, the read-only view
// of the lowers ("" for none), and makes the plan; reusable is false when
// a target's resolution followed a symlink.
func planStubs(view string, mounts []rootMount) (plan *StubPlan, reusable bool, err error) {
	plan = &StubPlan{}
	reusable = true
	planned := map[string]bool{}
	names := map[string]bool{}
	for _, m := range mounts {
		plan.Targets = append(plan.Targets, targetKey(m))
		clean := strings.TrimPrefix(path.Clean("/"+m.target), "/")
		first, _, _ := strings.Cut(clean, "/")
		if !names[first] {
			names[first] = true
			plan.Names = append(plan.Names, first)
		}
		rel, exists, err := resolveInRoot(view, m.target)
		if err != nil {
			return nil, false, fmt.Errorf("resolving mount point %s: %w", m.target, err)
		}
		if rel != clean {
			reusable = false // a symlink on the way
		}
		if exists {
			continue
		}
		planStub(view, rel, m.dir, plan, planned)
	}
	return plan, reusable, nil
}

// planStub adds the entries that make the mount point rel, and its
// missing parents: a parent the image has as a directory is copied with
// its metadata, the rest are new.
func planStub(view, rel string, dir bool, plan *StubPlan, planned map[string]bool) {
	parts := strings.Split(rel, "/")
	cur := ""
	for i, c := range parts {
		cur = path.Join(cur, c)
		if planned[cur] {
			continue // made for an earlier mount point
		}
		planned[cur] = true
		s := Stub{Rel: cur, Dir: i < len(parts)-1 || dir}
		var lower fs.FileInfo
		if view != "" {
			lower, _ = os.Lstat(filepath.Join(view, cur))
		}
		if s.Dir && lower != nil && lower.IsDir() {
			st := lower.Sys().(*syscall.Stat_t)
			s.Lower, s.Mode, s.UID, s.GID = true, st.Mode&0o7777, st.Uid, st.Gid
			s.Atime, s.Mtime = unix.TimespecToNsec(unix.Timespec(st.Atim)), unix.TimespecToNsec(unix.Timespec(st.Mtim))
		}
		plan.Stubs = append(plan.Stubs, s)
	}
}

// makeStubs creates the plan's entries in layer, the stub layer.
func makeStubs(layer string, stubs []Stub) error {
	for _, s := range stubs {
		p := filepath.Join(layer, s.Rel)
		var err error
		switch {
		case !s.Dir:
			err = os.WriteFile(p, nil, 0o644)
		case s.Lower:
			if err = os.Mkdir(p, 0o755); err == nil {
				err = os.Lchown(p, int(s.UID), int(s.GID))
			}
			if err == nil {
				// After chown, which clears setuid and setgid bits.
				err = unix.Chmod(p, s.Mode)
			}
		default:
			err = os.Mkdir(p, 0o755)
		}
		if err != nil {
			return fmt.Errorf("creating mount point %s: %w", s.Rel, err)
		}
	}
	// Creating children changed the parents' mtimes: the copied times go
	// last, deepest first, as setting a child's times does not touch its
	// parent.
	for i := len(stubs) - 1; i >= 0; i-- {
		s := stubs[i]
		if !s.Lower {
			continue
		}
		ts := []unix.Timespec{unix.NsecToTimespec(s.Atime), unix.NsecToTimespec(s.Mtime)}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(layer, s.Rel), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("creating mount point %s: %w", s.Rel, err)
		}
	}
	return nil
}
