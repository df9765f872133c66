// Package features remembers what kiln found out about the host, in a small
// file of kiln's store, for as long as the answer can hold: until the
// kernel boots again (its boot id) or kiln changes (its build and its
// binary). A later build in the same boot then asks the kernel nothing.
//
// An answer read back here is a hint for checks before the build (flag
// validation, warnings), never a guard: code that applies a guard asks the
// kernel itself, and a cached answer that has become wrong only moves the
// error from the start of the build to the step that needs the feature.
package features

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
)

// file is the cache's name in the store.
const file = "features.json"

// cache is the one cache of this process.
var cache struct {
	mu    sync.Mutex
	path  string // "" until Use
	read  bool   // path's contents have been read into doc
	doc   document
	stamp string // boot id and kiln version of this process
}

// document is the file: entries are valid only under its stamp.
type document struct {
	Stamp   string           `json:"stamp"`
	Entries map[string]entry `json:"entries"`
}

type entry struct {
	// Scope is what else the answer depends on (kiln's cgroup, its
	// user): a different scope is a different question.
	Scope string          `json:"scope"`
	Value json.RawMessage `json:"value"`
}

// Use keeps the cache in the store at root. Until it is called, Load finds
// nothing and Save keeps nothing.
func Use(root string) {
	cache.mu.Lock()
	defer cache.mu.Unlock()
	p := filepath.Join(root, file)
	if p != cache.path {
		cache.path, cache.read, cache.doc = p, false, document{}
	}
}

// Load reads the answer saved under name for scope into v; false when
// there is none that still holds (another boot, another kiln, another
// scope, no cache).
func Load(name, scope string, v any) bool {
	cache.mu.Lock()
	defer cache.mu.Unlock()
	if !readLocked() {
		return false
	}
	e, ok := cache.doc.Entries[name]
	if !ok || e.Scope != scope {
		return false
	}
	return json.Unmarshal(e.Value, v) == nil
}

// Save remembers v as the answer for name in scope. Failing to write
// only costs asking the kernel again next time; two kilns saving at once
// may lose one answer the same way.
func Save(name, scope string, v any) {
	cache.mu.Lock()
	defer cache.mu.Unlock()
	if !readLocked() {
		return
	}
	val, err := json.Marshal(v)
	if err != nil {
		return
	}
	if e, ok := cache.doc.Entries[name]; ok && e.Scope == scope && string(e.Value) == string(val) {
		return // unchanged: no write
	}
	if cache.doc.Entries == nil {
		cache.doc.Entries = map[string]entry{}
	}
	cache.doc.Entries[name] = entry{Scope: scope, Value: val}
	data, err := json.Marshal(cache.doc)
	if err != nil {
		return
	}
	dir := filepath.Dir(cache.path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	tmp, err := os.CreateTemp(dir, ".features-")
	if err != nil {
		return
	}
	_, err = tmp.Write(append(data, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), cache.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
}

// readLocked reads the cache file once; false when there is no cache to
// use (no store yet, or no boot id to tell one boot from the next).
func readLocked() bool {
	if cache.path == "" {
		return false
	}
	if cache.stamp == "" {
		s, err := stamp()
		if err != nil {
			return false
		}
		cache.stamp = s
	}
	if !cache.read {
		cache.read = true
		cache.doc = document{Stamp: cache.stamp}
		if data, err := os.ReadFile(cache.path); err == nil {
			var d document
			// a damaged file or another boot's is simply replaced
			if json.Unmarshal(data, &d) == nil && d.Stamp == cache.stamp {
				cache.doc = d
			}
		}
	}
	return true
}

// reset forgets the process's cache, for tests.
func reset() {
	cache.mu.Lock()
	defer cache.mu.Unlock()
	cache.path, cache.read, cache.doc, cache.stamp = "", false, document{}, ""
}
