package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Layers are made durable after they are published, not before.
//
// Syncing a layer's files before its directory becomes visible used to put
// a syncfs (and half a dozen fsyncs) on the path of every pull and commit:
// on a fresh runner that is the wait for hundreds of megabytes to reach the
// disk before the next step may start, and on a warm laptop a few
// milliseconds per RUN step. Instead a layer is published at once, its
// info.json naming the boot it was written in and when (CLOCK_BOOTTIME);
// later one syncfs of the store's filesystem is followed by a record in
// ROOT/durable/BOOT of up to when that boot's publishes are on disk. With
// Store.Detach (kiln) that sync is a detached process's, started by Close,
// so the command never waits for the disk; without it a goroutine of the
// Store syncs in the background and Close waits for it. No layer directory
// is touched again.
//
// Why that is safe: until the data reaches the disk it is in the page
// cache, which every process of the same boot sees — a killed kiln loses
// nothing it wrote. Only a crash of the machine can lose it, and that
// changes the boot id: a layer of another boot that its boot's record does
// not cover may be missing data, so readers take it as absent (and remove
// it, so that the next pull or build stores it again), and kiln verify
// reports it.

// currentBoot is the kernel's boot id, or "" where it cannot be read —
// then every publish is synced first, as before.
var currentBoot = sync.OnceValue(func() string {
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
})

// syncInline reports whether what the store writes must be synced before
// it is published, as before boot-scoped durability: where there is no
// boot id to scope an unsynced publish by.
func syncInline() bool { return currentBoot() == "" }

// unsyncedMark is what info.json says of a layer published unsynced.
type unsyncedMark struct {
	Boot string `json:"boot"`
	At   int64  `json:"at"` // CLOCK_BOOTTIME, nanoseconds
}

// newMark is the mark of a publish now, or nil where there is no boot id
// to scope one by (then publishing syncs first).
func newMark() *unsyncedMark {
	boot := currentBoot()
	if boot == "" {
		return nil
	}
	return &unsyncedMark{Boot: boot, At: bootTime()}
}

func bootTime() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// suspect reports whether a layer with this info may have lost data to a
// crash: published unsynced in another boot, after the last sync that
// boot recorded.
func (s *Store) suspect(info infoFile) bool {
	m := info.Unsynced
	if m == nil || m.Boot == currentBoot() {
		return false
	}
	return m.At > s.syncedUntil(m.Boot)
}

func (s *Store) durableDir() string { return filepath.Join(s.Root, "durable") }

// syncedUntil reads ROOT/durable/BOOT: the boot time up to which BOOT's
// publishes were synced (-1: none recorded). Boots other than this one
// cannot change, so the answer is kept.
func (s *Store) syncedUntil(boot string) int64 {
	d := &s.durable
	d.mu.Lock()
	defer d.mu.Unlock()
	if v, ok := d.until[boot]; ok {
		return v
	}
	v := int64(-1)
	if isBootID(boot) {
		if data, err := os.ReadFile(filepath.Join(s.durableDir(), boot)); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64); err == nil {
				v = n
			}
		}
	}
	if d.until == nil {
		d.until = map[string]int64{}
	}
	d.until[boot] = v
	return v
}

// isBootID keeps a boot id read from a layer's info.json a plain file
// name (a UUID).
func isBootID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == '-') {
			return false
		}
	}
	return true
}

// durability is the Store's background syncer.
type durability struct {
	mu      sync.Mutex
	pending bool             // something was published since the last sync began
	idle    chan struct{}    // closed when no sync is running; nil before the first
	err     error            // the first background failure, reported by Close
	until   map[string]int64 // syncedUntil's answers
}

// published tells the background syncer something was stored unsynced.
func (s *Store) published() {
	d := &s.durable
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pending = true
	if s.Detach != nil {
		// All of it goes to the detached process at Close: a syncfs
		// running here would hold up this process's exit until it
		// returns (a thread in a syscall cannot be cut short).
		return
	}
	if d.idle == nil || isClosed(d.idle) {
		d.idle = make(chan struct{})
		go s.syncLoop(d.idle)
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// syncLoop syncs the store's filesystem and records up to when this
// boot's publishes are durable, until nothing new is pending.
func (s *Store) syncLoop(idle chan struct{}) {
	d := &s.durable
	for {
		d.mu.Lock()
		if !d.pending {
			close(idle)
			d.mu.Unlock()
			return
		}
		d.pending = false
		d.mu.Unlock()
		began := bootTime()
		err := syncFilesystem(s.Root)
		if err == nil {
			err = s.recordSynced(began)
		}
		if err != nil {
			d.mu.Lock()
			if d.err == nil {
				d.err = err
			}
			d.mu.Unlock()
		}
	}
}

// recordSynced raises ROOT/durable/BOOT to t: everything published in this
// boot before t is on disk. Another process may raise it at the same time;
// losing that race only leaves a record lower than it could be, which
// costs a re-pull after a crash, never trust in lost data.
func (s *Store) recordSynced(t int64) error { return recordSynced(s.Root, t) }

// FinishDurable is what a detached process does for a Store that closed
// with publishes not yet synced (Store.Detach): one syncfs of the store's
// filesystem, then the record that everything this boot published before
// until is durable.
func FinishDurable(root string, until int64) error {
	if currentBoot() == "" {
		return errors.New("no boot id: nothing to record")
	}
	if err := syncFilesystem(root); err != nil {
		return err
	}
	return recordSynced(root, until)
}

func recordSynced(root string, t int64) error {
	boot := currentBoot()
	durableDir := filepath.Join(root, "durable")
	path := filepath.Join(durableDir, boot)
	if data, err := os.ReadFile(path); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64); err == nil && n >= t {
			return nil
		}
	}
	// Mkdir, not MkdirAll: a store removed meanwhile must stay removed.
	if err := os.Mkdir(durableDir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	// The temp file lives next to the record: ROOT/tmp is for builds,
	// and may be emptied under us.
	return writeReplacing(durableDir, path, []byte(strconv.FormatInt(t, 10)+"\n"), true)
}

// closeDurable is Close's part: with syncs still running or pending and
// a Detach, they are handed to another process (at most a syncfs and one
// small write) so that the command exits at once; otherwise it waits for
// them.
func (s *Store) closeDurable() error {
	d := &s.durable
	d.mu.Lock()
	busy := d.pending || (d.idle != nil && !isClosed(d.idle))
	d.mu.Unlock()
	if busy && s.Detach != nil && !syncInline() {
		if err := s.Detach(s.Root, bootTime()); err == nil {
			return nil
		}
	}
	return s.waitDurable()
}

// waitDurable blocks until the background syncer is idle and returns its
// first failure.
func (s *Store) waitDurable() error {
	d := &s.durable
	d.mu.Lock()
	idle := d.idle
	d.mu.Unlock()
	if idle != nil {
		<-idle
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return fmt.Errorf("making the store durable: %w (what this build stored is trusted until the machine restarts, then fetched or built again)", d.err)
	}
	return nil
}

// writeUnsynced is writeAtomic without the syncs: a reader sees the old
// content or the new one; what survives a crash is for the boot mark to
// judge.
func (s *Store) writeUnsynced(path string, data []byte) error {
	return writeReplacing(s.tmp(), path, data, false)
}

// dropSuspect moves a layer directory from another boot's unsynced publish
// out of layers/ and removes it, so that the next pull or commit of the
// layer stores it afresh.
func (s *Store) dropSuspect(dir string) {
	away, err := os.MkdirTemp(s.tmp(), "suspect-")
	if err != nil {
		return
	}
	if err := os.Rename(dir, filepath.Join(away, "layer")); err != nil {
		os.Remove(away)
		return
	}
	os.RemoveAll(away)
}
