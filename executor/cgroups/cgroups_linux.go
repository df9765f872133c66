// Package cgroups gives each RUN step a cgroup of its own: resource limits,
// the default pids limit, the device allow-list (devices.Default), a
// cgroup namespace root, and a way to kill every process of the step.
// cgroup v2 is used where it has the memory and pids controllers, v1
// otherwise.
package cgroups

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/kiln-build/kiln/internal/mountinfo"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/executor/devices"
	"github.com/kiln-build/kiln/internal/features"
)

// v1Controllers are the cgroup v1 controllers a step uses; the first
// three are required, the others only when a limit asks for them.
var v1Controllers = []string{"memory", "pids", "devices", "cpu", "blkio"}

// Hierarchy is where kiln's own cgroups are: for v2 the one directory,
// for v1 one per controller.
type Hierarchy struct {
	V2   bool
	Dirs map[string]string // controller ("" for v2) → kiln's own cgroup directory
}

// Available reports why RUN steps cannot get cgroups of their own
// (rootless without delegation, no controllers mounted), or nil. It asks
// the kernel (once per process): what a step's guards rely on.
func Available() error {
	_, err := Host()
	return err
}

// Expected is Available's answer without asking the kernel when an
// earlier kiln of this boot, as the same user in the same cgroup, found
// it already (features cache): for checks before the build, such as
// flag validation. Never a guard: New asks the kernel itself, and fails
// if a cached "available" has become wrong.
func Expected() error {
	scope, err := cacheScope()
	if err != nil {
		return Available()
	}
	var c cachedAnswer
	if features.Load(cacheName, scope, &c) {
		if c.Err != "" {
			return errors.New(c.Err)
		}
		return nil
	}
	return Available()
}

// cacheName is the features cache entry of Available's answer.
const cacheName = "cgroups"

type cachedAnswer struct {
	Err string `json:"err,omitempty"` // why steps get no cgroup; "" when they do
}

// cacheScope is what Available's answer depends on besides the boot and
// kiln: the user kiln runs as and the cgroups it is in.
func cacheScope() (string, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("euid %d\n%s", os.Geteuid(), own), nil
}

// Host finds kiln's cgroups, once; the error says why steps cannot have
// cgroups of their own. The answer is remembered for Expected.
var Host = sync.OnceValues(func() (*Hierarchy, error) {
	// The scope as the next kiln will see it: finding the cgroups may
	// move this one into a leaf of its own.
	scope, serr := cacheScope()
	h, err := findCgroups()
	if serr == nil {
		var c cachedAnswer
		if err != nil {
			c.Err = err.Error()
		}
		features.Save(cacheName, scope, c)
	}
	return h, err
})

func findCgroups() (*Hierarchy, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("reading /proc/self/cgroup: %w", err)
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	paths := map[string]string{} // controller or "" (v2) → path in its hierarchy
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			paths[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			paths[c] = parts[2]
		}
	}
	// The unified hierarchy if it has the controllers (a pure v2 host);
	// on a hybrid host the controllers live in v1 and the unified
	// hierarchy is empty.
	if m, ok := mounts[""]; ok && paths[""] != "" {
		dir := m.join(paths[""])
		ctrl, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		have := strings.Fields(string(ctrl))
		if slices.Contains(have, "memory") && slices.Contains(have, "pids") {
			if err := enableV2(dir, have); err != nil {
				// kiln shares its cgroup (a login session, a CI job): use
				// a cgroup of its own at the top of the hierarchy, as
				// container engines do.
				top, terr := topV2(m.point, have)
				if terr != nil {
					return nil, fmt.Errorf("%w; %w", err, terr)
				}
				dir = top
			}
			h := &Hierarchy{V2: true, Dirs: map[string]string{"": dir}}
			removeStale(h)
			return h, nil
		}
	}
	h := &Hierarchy{Dirs: map[string]string{}}
	for _, c := range v1Controllers {
		m, ok := mounts[c]
		p, inCg := paths[c]
		if !ok || !inCg {
			continue
		}
		h.Dirs[c] = m.join(p)
	}
	for _, c := range v1Controllers[:3] {
		if h.Dirs[c] == "" {
			return nil, fmt.Errorf("no usable cgroup hierarchy: neither cgroup v2 with the memory and pids controllers nor a v1 %s controller is mounted", c)
		}
	}
	removeStale(h)
	// Writable? The kernel checks a mkdir there as access(2) does: no
	// cgroup has to be made and removed to find out.
	for _, c := range v1Controllers[:3] {
		if err := unix.Faccessat(unix.AT_FDCWD, h.Dirs[c], unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
			return nil, fmt.Errorf("creating a cgroup in %s: %w", h.Dirs[c], err)
		}
	}
	return h, nil
}

// removeStale removes the step cgroups of kiln processes that died
// without cleaning up (SIGKILL): their processes died with them, as the
// sandbox init has Pdeathsig, so the cgroups are empty. A cgroup with
// processes refuses rmdir, so a live build elsewhere is never disturbed.
func removeStale(h *Hierarchy) {
	for _, dir := range h.Dirs {
		stale, _ := filepath.Glob(filepath.Join(dir, "kiln-step-*"))
		for _, cg := range stale {
			var pid int
			if _, err := fmt.Sscanf(filepath.Base(cg), "kiln-step-%d-", &pid); err != nil || pid == os.Getpid() {
				continue
			}
			if unix.Kill(pid, 0) == unix.ESRCH {
				// A cgroup with the devices allow-list holds the step
				// cgroups made below it (filteredDevices).
				inner, _ := filepath.Glob(filepath.Join(cg, "kiln-step-*"))
				for _, in := range inner {
					unix.Rmdir(in)
				}
				unix.Rmdir(cg)
			}
		}
	}
}

// enableV2 makes the controllers available to the step cgroups below dir.
// cgroup v2 forbids processes in a cgroup that delegates controllers to
// its children (except at the root): when kiln is alone in its cgroup, it
// moves itself into a leaf, as container init systems do; otherwise it
// gives up, with a message saying how to give it a cgroup of its own.
func enableV2(dir string, have []string) error {
	var want []string
	for _, c := range []string{"memory", "pids", "cpu", "io"} {
		if slices.Contains(have, c) {
			want = append(want, "+"+c)
		}
	}
	ctl := filepath.Join(dir, "cgroup.subtree_control")
	err := os.WriteFile(ctl, []byte(strings.Join(want, " ")), 0)
	if err == nil || !errors.Is(err, unix.EBUSY) {
		if err != nil {
			return fmt.Errorf("enabling cgroup controllers in %s: %w", dir, err)
		}
		return nil
	}
	procs, rerr := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if rerr != nil {
		return fmt.Errorf("enabling cgroup controllers in %s: %w", dir, rerr)
	}
	if f := strings.Fields(string(procs)); len(f) != 1 || f[0] != strconv.Itoa(os.Getpid()) {
		return fmt.Errorf("enabling cgroup controllers in %s: other processes share kiln's cgroup; run kiln in a cgroup of its own (systemd-run --scope -p Delegate=yes)", dir)
	}
	leaf := filepath.Join(dir, "kiln")
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating cgroup %s: %w", leaf, err)
	}
	if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return fmt.Errorf("moving kiln into cgroup %s: %w", leaf, err)
	}
	if err := os.WriteFile(ctl, []byte(strings.Join(want, " ")), 0); err != nil {
		return fmt.Errorf("enabling cgroup controllers in %s: %w", dir, err)
	}
	return nil
}

// topV2 makes "kiln" below the root of the v2 hierarchy mounted at point,
// with the controllers delegated to its children, and returns it. It
// holds no process, so that cgroup v2 lets it delegate.
func topV2(point string, have []string) (string, error) {
	var want []string
	for _, c := range []string{"memory", "pids", "cpu", "io"} {
		if slices.Contains(have, c) {
			want = append(want, "+"+c)
		}
	}
	ctl := strings.Join(want, " ")
	if err := os.WriteFile(filepath.Join(point, "cgroup.subtree_control"), []byte(ctl), 0); err != nil {
		return "", fmt.Errorf("enabling cgroup controllers in %s: %w", point, err)
	}
	dir := filepath.Join(point, "kiln")
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("creating cgroup %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(ctl), 0); err != nil {
		return "", fmt.Errorf("enabling cgroup controllers in %s: %w", dir, err)
	}
	return dir, nil
}

// cgroupMount is a mounted cgroup hierarchy.
type cgroupMount struct {
	root, point string // the hierarchy's path shown at point
}

// join turns a path of /proc/self/cgroup into one on the host.
func (m cgroupMount) join(p string) string {
	rel, err := filepath.Rel(m.root, p)
	if err != nil || strings.HasPrefix(rel, "..") {
		// Outside what this mount shows (a container's namespaced view
		// shows its own cgroup as the root).
		rel = ""
	}
	return filepath.Join(m.point, rel)
}

// cgroupMounts maps each v1 controller, and "" for the unified
// hierarchy, to where it is mounted.
func cgroupMounts() (map[string]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	out := map[string]cgroupMount{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent dev root point options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 3 {
			continue
		}
		m := cgroupMount{root: fields[3], point: mountinfo.Unescape(fields[4])}
		switch tail[0] {
		case "cgroup2":
			if _, seen := out[""]; !seen {
				out[""] = m
			}
		case "cgroup":
			for _, opt := range strings.Split(tail[2], ",") {
				if _, seen := out[opt]; !seen && slices.Contains(v1Controllers, opt) {
					out[opt] = m
				}
			}
		}
	}
	return out, sc.Err()
}

// Limits are the resource limits of a step; zero values leave the
// default.
type Limits struct {
	Memory      int64   // bytes; 0 is unlimited
	MemorySwap  int64   // memory plus swap as docker's --memory-swap: 0 is twice Memory, -1 unlimited
	CPUShares   uint64  // relative weight; 0 is the default
	CPUs        float64 // cores; 0 is unlimited
	Pids        int64   // processes and threads; -1 (or 0) is unlimited
	BlkioWeight uint16  // 10 to 1000; 0 is the default
}

// Step is the cgroup of one RUN step, in every hierarchy it uses.
type Step struct {
	v2   bool
	dirs map[string]string // controller ("" for v2) → the step's directory
	// Memory and Pids are the limits applied, for the messages of a step
	// that hit them.
	Memory, Pids int64
	// inheritsRules: the v1 devices cgroup was made below a cgroup with
	// the allow-list asked for (filteredDevices), and copied it.
	inheritsRules bool
	// DeviceFilterErr says why the step's cgroup has no device filter of
	// ours although one was asked for (a v2 kernel that refuses the BPF
	// program, kiln in a container that forbids it); nil when it has one
	// or none was asked for. The caller must then guard devices another
	// way.
	DeviceFilterErr error
}

// New creates a step's cgroup below kiln's own with limits l and, unless
// rules is nil (an insecure step, which may use every device as a
// privileged container), the device allow-list rules. The caller checks
// Available first.
func New(l Limits, rules []devices.Rule) (*Step, error) {
	h, err := Host()
	if err != nil {
		return nil, err
	}
	// kiln's pid in the name tells whose a step cgroup is, and that it
	// leaked if that process is gone.
	var rnd [4]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("kiln-step-%d-%s", os.Getpid(), hex.EncodeToString(rnd[:]))
	cg := &Step{v2: h.V2, dirs: map[string]string{}, Memory: l.Memory, Pids: l.Pids}
	ok := false
	defer func() {
		if !ok {
			cg.Remove()
		}
	}()
	if h.V2 {
		cg.dirs[""] = filepath.Join(h.Dirs[""], name)
		if err := os.Mkdir(cg.dirs[""], 0o755); err != nil {
			return nil, fmt.Errorf("creating cgroup: %w", err)
		}
		if err := cg.limitV2(l); err != nil {
			return nil, err
		}
		if rules != nil {
			cg.DeviceFilterErr = guardDevices(cg, rules)
		}
		ok = true
		return cg, nil
	}
	need := []string{"memory", "pids", "devices"}
	if l.CPUShares != 0 || l.CPUs != 0 {
		need = append(need, "cpu")
	}
	if l.BlkioWeight != 0 {
		need = append(need, "blkio")
	}
	for _, c := range need {
		parent, have := h.Dirs[c]
		if !have {
			return nil, fmt.Errorf("resource limits are unavailable: no cgroup v1 %s controller", c)
		}
		if c == "devices" && rules != nil {
			// Below a cgroup that has the allow-list, which a new v1
			// cgroup copies: no rule to write per step.
			if p, err := filteredDevices(parent, rules); err == nil {
				parent, cg.inheritsRules = p, true
			}
		}
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating cgroup: %w", err)
		}
		cg.dirs[c] = dir
	}
	if err := cg.limitV1(l); err != nil {
		return nil, err
	}
	if rules != nil {
		cg.DeviceFilterErr = guardDevices(cg, rules)
	}
	ok = true
	return cg, nil
}

// guardDevices applies the device allow-list rules to a new step's
// cgroup; a variable so that tests can make it fail as a kernel that
// refuses the filter would.
var guardDevices = (*Step).guardDevices

func (cg *Step) guardDevices(rules []devices.Rule) error {
	if cg.v2 {
		return devices.AttachFilter(cg.dirs[""], rules)
	}
	if cg.inheritsRules {
		return nil
	}
	return cg.denyDevicesV1(rules)
}

// filtered are the v1 devices cgroups, below kiln's own, that hold an
// allow-list for the steps' cgroups to copy when they are made below
// them (cgroup v1 starts a cgroup with its parent's list): a dozen
// writes less per step. Made on first use, by rules; RemoveFiltered
// removes them.
var filtered struct {
	mu   sync.Mutex
	dirs map[string]string // kiln's devices cgroup + rules → the cgroup
}

// filteredDevices returns a cgroup below parent, a v1 devices cgroup,
// whose allow-list is rules.
func filteredDevices(parent string, rules []devices.Rule) (string, error) {
	var key strings.Builder
	key.WriteString(parent)
	for _, r := range rules {
		key.WriteString("\n" + r.V1())
	}
	filtered.mu.Lock()
	defer filtered.mu.Unlock()
	if dir, ok := filtered.dirs[key.String()]; ok {
		return dir, nil
	}
	// Named as a step's cgroup, so that a kiln killed outright leaves it
	// to the next one's removeStale.
	var rnd [4]byte
	rand.Read(rnd[:])
	dir := filepath.Join(parent, fmt.Sprintf("kiln-step-%d-devices-%s", os.Getpid(), hex.EncodeToString(rnd[:])))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	fc := &Step{dirs: map[string]string{"devices": dir}}
	if err := fc.denyDevicesV1(rules); err != nil {
		unix.Rmdir(dir)
		return "", err
	}
	if filtered.dirs == nil {
		filtered.dirs = map[string]string{}
	}
	filtered.dirs[key.String()] = dir
	return dir, nil
}

// RemoveFiltered removes the cgroups filteredDevices made, once no step
// cgroup is left in them (WaitRemoved first); a later step makes them
// again.
func RemoveFiltered() {
	filtered.mu.Lock()
	defer filtered.mu.Unlock()
	for key, dir := range filtered.dirs {
		if unix.Rmdir(dir) == nil || !exists(dir) {
			delete(filtered.dirs, key)
		}
	}
}

// OpenV2 wraps an existing cgroup v2 directory as a step's cgroup, with no
// limits of its own.
func OpenV2(dir string) *Step {
	return &Step{v2: true, dirs: map[string]string{"": dir}}
}

// UnifiedDir is kiln's own cgroup directory in the cgroup v2 hierarchy,
// which v2 and hybrid hosts both mount.
func UnifiedDir() (string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return "", err
	}
	m, ok := mounts[""]
	if !ok {
		return "", errors.New("no cgroup v2 hierarchy mounted")
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("reading /proc/self/cgroup: %w", err)
	}
	for _, l := range strings.Split(string(own), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return m.join(p), nil
		}
	}
	return "", errors.New("kiln is in no cgroup v2")
}

// write sets one cgroup file of controller c.
func (cg *Step) write(c, file, value string) error {
	p := filepath.Join(cg.dirs[c], file)
	if err := os.WriteFile(p, []byte(value), 0); err != nil {
		return fmt.Errorf("setting cgroup %s to %s: %w", p, value, err)
	}
	return nil
}

func (cg *Step) limitV1(s Limits) error {
	if s.Memory > 0 {
		if err := cg.write("memory", "memory.limit_in_bytes", strconv.FormatInt(s.Memory, 10)); err != nil {
			return err
		}
		swap := s.MemorySwap
		if swap == 0 {
			swap = 2 * s.Memory // docker's default: as much swap as memory
		}
		_, err := os.Stat(filepath.Join(cg.dirs["memory"], "memory.memsw.limit_in_bytes"))
		switch {
		case err == nil:
			if err := cg.write("memory", "memory.memsw.limit_in_bytes", strconv.FormatInt(swap, 10)); err != nil {
				return err
			}
		case s.MemorySwap > 0:
			return errors.New("memory+swap limit unavailable: the kernel does not account swap (swapaccount=1)")
		}
	}
	pids := "max"
	if n := s.Pids; n > 0 {
		pids = strconv.FormatInt(n, 10)
	}
	if err := cg.write("pids", "pids.max", pids); err != nil {
		return err
	}
	if s.CPUShares != 0 {
		if err := cg.write("cpu", "cpu.shares", strconv.FormatUint(s.CPUShares, 10)); err != nil {
			return err
		}
	}
	if s.CPUs != 0 {
		if err := cg.write("cpu", "cpu.cfs_period_us", "100000"); err != nil {
			return err
		}
		if err := cg.write("cpu", "cpu.cfs_quota_us", strconv.FormatInt(int64(s.CPUs*100000), 10)); err != nil {
			return err
		}
	}
	if s.BlkioWeight != 0 {
		w := strconv.Itoa(int(s.BlkioWeight))
		switch {
		case exists(filepath.Join(cg.dirs["blkio"], "blkio.weight")):
			return cg.write("blkio", "blkio.weight", w)
		case exists(filepath.Join(cg.dirs["blkio"], "blkio.bfq.weight")):
			return cg.write("blkio", "blkio.bfq.weight", w)
		}
		return errors.New("block I/O weight unavailable: the disks' I/O scheduler has no weights (needs bfq or cfq)")
	}
	return nil
}

func (cg *Step) limitV2(s Limits) error {
	if s.Memory > 0 {
		if err := cg.write("", "memory.max", strconv.FormatInt(s.Memory, 10)); err != nil {
			return err
		}
		// v2 limits swap alone, not memory plus swap.
		swap := "max"
		switch {
		case s.MemorySwap == 0:
			swap = strconv.FormatInt(s.Memory, 10)
		case s.MemorySwap > 0:
			swap = strconv.FormatInt(s.MemorySwap-s.Memory, 10)
		}
		if exists(filepath.Join(cg.dirs[""], "memory.swap.max")) {
			if err := cg.write("", "memory.swap.max", swap); err != nil {
				return err
			}
		} else if s.MemorySwap > 0 {
			return errors.New("memory+swap limit unavailable: the kernel does not account swap")
		}
	}
	pids := "max"
	if n := s.Pids; n > 0 {
		pids = strconv.FormatInt(n, 10)
	}
	if err := cg.write("", "pids.max", pids); err != nil {
		return err
	}
	if s.CPUShares != 0 {
		// runc's conversion of shares (2..262144) to weight (1..10000).
		w := 1 + ((s.CPUShares-2)*9999)/262142
		if err := cg.write("", "cpu.weight", strconv.FormatUint(w, 10)); err != nil {
			return err
		}
	}
	if s.CPUs != 0 {
		if err := cg.write("", "cpu.max", fmt.Sprintf("%d 100000", int64(s.CPUs*100000))); err != nil {
			return err
		}
	}
	if s.BlkioWeight != 0 {
		w := strconv.Itoa(int(s.BlkioWeight))
		if exists(filepath.Join(cg.dirs[""], "io.bfq.weight")) {
			return cg.write("", "io.bfq.weight", w)
		}
		// io.weight is 1..10000 for a blkio weight of 10..1000.
		w = strconv.Itoa(1 + (int(s.BlkioWeight)-10)*9999/990)
		return cg.write("", "io.weight", "default "+w)
	}
	return nil
}

// denyDevicesV1 sets the v1 devices controller to rules: deny all, then
// allow each.
func (cg *Step) denyDevicesV1(rules []devices.Rule) error {
	if err := cg.write("devices", "devices.deny", "a"); err != nil {
		return err
	}
	for _, d := range rules {
		if err := cg.write("devices", "devices.allow", d.V1()); err != nil {
			return err
		}
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// procsDir is a directory whose cgroup.procs lists every process of the
// step.
func (cg *Step) procsDir() string {
	if cg.v2 {
		return cg.dirs[""]
	}
	return cg.dirs["pids"]
}

// CloneFD opens the step's cgroup for CLONE_INTO_CGROUP: possible on v2
// only, where one directory holds every controller. It returns -1 when
// the child has to be moved in after it starts instead.
func (cg *Step) CloneFD() int {
	if cg == nil || !cg.v2 {
		return -1
	}
	fd, err := unix.Open(cg.dirs[""], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

// Add moves pid, and so everything it will start, into the step's cgroup.
func (cg *Step) Add(pid int) error {
	for c := range cg.dirs {
		if err := cg.write(c, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("placing the sandbox in its cgroup: %w", err)
		}
	}
	return nil
}

// Kill SIGKILLs every process of the step. The sandbox init is PID 1 of
// its namespace, and its death takes the others along; the cgroup is how
// nothing escapes even in between.
func (cg *Step) Kill() {
	if cg.v2 && os.WriteFile(filepath.Join(cg.dirs[""], "cgroup.kill"), []byte("1"), 0) == nil {
		return
	}
	// Repeat until no process is left: one may fork while we read the
	// list.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		pids := cg.procs()
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(time.Millisecond)
	}
}

func (cg *Step) procs() []int {
	b, err := os.ReadFile(filepath.Join(cg.procsDir(), "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// counter reads "key N" from a flat-keyed cgroup file.
func (cg *Step) counter(c, file, key string) int64 {
	b, err := os.ReadFile(filepath.Join(cg.dirs[c], file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// OOMKilled reports whether the OOM killer killed a process of the step.
func (cg *Step) OOMKilled() bool {
	if cg.v2 {
		return cg.counter("", "memory.events", "oom_kill") > 0
	}
	return cg.counter("memory", "memory.oom_control", "oom_kill") > 0
}

// PidsLimitHit reports whether a fork or clone of the step was refused
// for the pids limit.
func (cg *Step) PidsLimitHit() bool {
	if cg.v2 {
		return cg.counter("", "pids.events", "max") > 0
	}
	return cg.counter("pids", "pids.events", "max") > 0
}

// removals are the step cgroups RemoveLater is removing.
var removals struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	err error // the first removal that failed
}

// RemoveLater removes the step's cgroup in the background, so that the
// next step never waits for it: an rmdir of a cgroup waits for the kernel
// (an RCU grace period, the last exiting task). The step's processes must
// be gone and its counters read. WaitRemoved waits for every such
// removal: kiln calls it before it exits, and a kiln killed before then
// leaves empty cgroups that the next one removes (removeStale).
func (cg *Step) RemoveLater() {
	removals.wg.Add(1)
	go func() {
		defer removals.wg.Done()
		if err := cg.Remove(); err != nil {
			removals.mu.Lock()
			if removals.err == nil {
				removals.err = err
			}
			removals.mu.Unlock()
		}
	}()
}

// WaitRemoved waits until every cgroup RemoveLater was given is removed,
// and returns the first removal that failed (since the last call).
func WaitRemoved() error {
	removals.wg.Wait()
	removals.mu.Lock()
	defer removals.mu.Unlock()
	err := removals.err
	removals.err = nil
	return err
}

// Remove deletes the step's cgroup. Its processes are dead by now, but the
// kernel may still be tearing them down: rmdir is retried briefly.
func (cg *Step) Remove() error {
	var first error
	for _, dir := range cg.dirs {
		var err error
		for i := 0; i < 200; i++ {
			err = unix.Rmdir(dir)
			if err == nil || errors.Is(err, unix.ENOENT) {
				err = nil
				break
			}
			if !errors.Is(err, unix.EBUSY) {
				break
			}
			if i == 100 {
				cg.Kill()
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil && first == nil {
			first = fmt.Errorf("removing cgroup %s: %w", dir, err)
		}
	}
	return first
}
