package planner

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// keyVersion changes whenever the encoding of keys, or what a step
// produces for the same inputs, changes: old records then simply miss.
const keyVersion = "kiln-step-v2"

// stepKey builds a step's cache key: a hash over its parent's key and its
// inputs, each framed with its length so that no two different input
// sequences collide. It also keeps a short digest per input, so that a miss
// can say which input changed since the last build of the same step.
type stepKey struct {
	h      hash.Hash
	kind   string
	inputs []keyInput
	// linked: a COPY --link, keyed without the steps below it; below is
	// the key of those steps, which the stage's key after it includes.
	linked bool
	below  string
}

type keyInput struct {
	Name string `json:"n"`
	Sum  string `json:"s"`
}

func newStepKey(kind, parent string) *stepKey {
	k := &stepKey{h: sha256.New(), kind: kind}
	k.add("version", keyVersion)
	k.add("kind", kind)
	k.add("parent", parent)
	return k
}

// add hashes one named input.
func (k *stepKey) add(name, value string) {
	var n [binary.MaxVarintLen64]byte
	for _, s := range []string{name, value} {
		k.h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
		io.WriteString(k.h, s)
	}
	sum := sha256.Sum256([]byte(value))
	k.inputs = append(k.inputs, keyInput{Name: name, Sum: hex.EncodeToString(sum[:8])})
}

// note records an input for explanations without hashing it: its value is
// already part of another input (a file of the context checksum).
func (k *stepKey) note(name, sum string) {
	if len(sum) > 16 {
		sum = sum[:16]
	}
	k.inputs = append(k.inputs, keyInput{Name: name, Sum: sum})
}

// addList hashes a list as one input, each element framed.
func (k *stepKey) addList(name string, values []string) {
	var sb strings.Builder
	for _, v := range values {
		fmt.Fprintf(&sb, "%d:%s;", len(v), v)
	}
	k.add(name, sb.String())
}

// addEnv hashes an environment as one input per variable, so a miss can
// name the variable that changed.
func (k *stepKey) addEnv(env []string) {
	k.add("env-count", fmt.Sprint(len(env)))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		k.add("env "+name, kv)
	}
}

func (k *stepKey) sum() string { return hex.EncodeToString(k.h.Sum(nil)) }

// explain compares the inputs of a missed step with those recorded for the
// same step (same Dockerfile position) last time, and records the new ones.
func (b *build) explain(identity string, k *stepKey) string {
	if b.opt.ExplainDir == "" {
		return ""
	}
	id := sha256.Sum256([]byte(identity))
	p := filepath.Join(b.opt.ExplainDir, hex.EncodeToString(id[:16])+".json")
	var prev []keyInput
	msg := ""
	if data, err := os.ReadFile(p); err == nil && json.Unmarshal(data, &prev) == nil {
		old := map[string]string{}
		for _, in := range prev {
			old[in.Name] = in.Sum
		}
		cur := map[string]bool{}
		var changed []string
		for _, in := range k.inputs {
			cur[in.Name] = true
			switch o, ok := old[in.Name]; {
			case !ok:
				changed = append(changed, in.Name+" (new)")
			case o != in.Sum:
				changed = append(changed, in.Name)
			}
		}
		for _, in := range prev {
			if !cur[in.Name] {
				changed = append(changed, in.Name+" (gone)")
			}
		}
		sort.SliceStable(changed, func(i, j int) bool {
			// the parent first: when it changed, the rest follows from it
			return strings.HasPrefix(changed[i], "parent") && !strings.HasPrefix(changed[j], "parent")
		})
		switch {
		case len(changed) == 0:
			msg = "cache miss: same inputs as last time (the cached result was pruned, or --no-cache)"
		case len(changed) > 12:
			msg = fmt.Sprintf("cache miss: changed since the last build: %s and %d more", strings.Join(changed[:12], ", "), len(changed)-12)
		default:
			msg = "cache miss: changed since the last build: " + strings.Join(changed, ", ")
		}
		if len(changed) > 0 && changed[0] == "parent" {
			msg += " (an earlier step changed)"
		}
	} else {
		msg = "cache miss: no earlier build of this step"
	}
	if data, err := json.Marshal(k.inputs); err == nil {
		// a unique temp file: concurrent builds may explain the same step
		_ = os.MkdirAll(b.opt.ExplainDir, 0o755)
		if tmp, err := os.CreateTemp(b.opt.ExplainDir, ".inputs-"); err == nil {
			_, werr := tmp.Write(data)
			if cerr := tmp.Close(); werr == nil && cerr == nil && os.Rename(tmp.Name(), p) == nil {
				return msg
			}
			os.Remove(tmp.Name())
		}
	}
	return msg
}
