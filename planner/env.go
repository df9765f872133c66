package planner

import "github.com/kiln-build/kiln/internal/envlist"

// envList is the environment of a stage's steps (package envlist).
type envList = envlist.List
