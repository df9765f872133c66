package planner

import "strings"

// envList is an ordered KEY=VALUE list where setting an existing key
// replaces it in place — the order BuildKit keeps for a step's environment
// and for the image config's Env.
type envList []string

func (e envList) index(key string) int {
	for i, kv := range e {
		k, _, _ := strings.Cut(kv, "=")
		if k == key {
			return i
		}
	}
	return -1
}

// Get implements shell.EnvGetter.
func (e envList) Get(key string) (string, bool) {
	if i := e.index(key); i >= 0 {
		_, v, _ := strings.Cut(e[i], "=")
		return v, true
	}
	return "", false
}

// Keys implements shell.EnvGetter.
func (e envList) Keys() []string {
	keys := make([]string, 0, len(e))
	for _, kv := range e {
		k, _, _ := strings.Cut(kv, "=")
		keys = append(keys, k)
	}
	return keys
}

// set returns the list with key set to value (the receiver is not modified).
func (e envList) set(key, value string) envList {
	out := append(envList(nil), e...)
	if i := out.index(key); i >= 0 {
		out[i] = key + "=" + value
		return out
	}
	return append(out, key+"="+value)
}

func (e envList) clone() envList { return append(envList(nil), e...) }
