//go:build !linux

package progress

import "os"

// IsTerminal reports false: kiln builds on Linux only, and elsewhere the
// plain layout is always right.
func IsTerminal(*os.File) bool { return false }

// TerminalSize returns zeros: see IsTerminal.
func TerminalSize(*os.File) (width, height int) { return 0, 0 }
