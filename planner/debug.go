package planner

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// DebugState is what kiln debug needs to open a shell where a RUN failed:
// the step's filesystem (its layers and what it wrote before failing) and
// the process settings it ran with.
type DebugState struct {
	Step    string   `json:"step"`
	Lowers  []string `json:"lowers"` // store layer directories, top-most first
	Upper   string   `json:"upper"`  // what the failed step wrote
	Args    []string `json:"args"`
	Env     []string `json:"env"`
	Cwd     string   `json:"cwd"`
	User    string   `json:"user"`
	Network string   `json:"network"`
}

// keepFailed moves the failed step's upper dir under dir and records the
// state beside it.
func keepFailed(dir string, st DebugState, upper string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("keeping the failed step: %w", err)
	}
	keep, err := os.MkdirTemp(dir, "step-")
	if err != nil {
		return "", fmt.Errorf("keeping the failed step: %w", err)
	}
	st.Upper = filepath.Join(keep, "upper")
	if err := os.Rename(upper, st.Upper); err != nil {
		return "", fmt.Errorf("keeping the failed step: %w", err)
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(keep, "state.json"), data, 0o600); err != nil {
		return "", fmt.Errorf("keeping the failed step: %w", err)
	}
	return keep, nil
}

// ReadDebugState reads what keepFailed recorded in a kept step directory.
func ReadDebugState(keep string) (DebugState, error) {
	var st DebugState
	data, err := os.ReadFile(filepath.Join(keep, "state.json"))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("reading %s: %w", filepath.Join(keep, "state.json"), err)
	}
	return st, nil
}
