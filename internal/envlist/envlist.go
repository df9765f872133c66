// Package envlist is an ordered KEY=VALUE list where setting an existing
// key replaces it in place: the order BuildKit keeps for a step's
// environment and for the image config's Env. The planner and the lint
// rules expand variables against it (it is a shell.EnvGetter).
package envlist

import "strings"

// List is the environment, KEY=VALUE.
type List []string

// Index is the position of key, or -1.
func (e List) Index(key string) int {
	for i, kv := range e {
		k, _, _ := strings.Cut(kv, "=")
		if k == key {
			return i
		}
	}
	return -1
}

// Get implements shell.EnvGetter.
func (e List) Get(key string) (string, bool) {
	if i := e.Index(key); i >= 0 {
		_, v, _ := strings.Cut(e[i], "=")
		return v, true
	}
	return "", false
}

// Keys implements shell.EnvGetter.
func (e List) Keys() []string {
	keys := make([]string, 0, len(e))
	for _, kv := range e {
		k, _, _ := strings.Cut(kv, "=")
		keys = append(keys, k)
	}
	return keys
}

// Set returns the list with key set to value (the receiver is not
// modified).
func (e List) Set(key, value string) List {
	out := e.Clone()
	if i := out.Index(key); i >= 0 {
		out[i] = key + "=" + value
		return out
	}
	return append(out, key+"="+value)
}

// Merge returns the list with every KEY=VALUE of kvs set in turn.
func (e List) Merge(kvs []string) List {
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		e = e.Set(k, v)
	}
	return e
}

// Clone returns a copy.
func (e List) Clone() List { return append(List(nil), e...) }
