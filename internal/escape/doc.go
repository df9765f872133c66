// Package escape holds kiln's end-to-end escape suite (escape_linux_test.go):
// each case builds a hostile Dockerfile, context or base image with the kiln
// binary and asserts that a host canary directory is untouched, and that the
// build ends (built or refused with a clear error) before its deadline.
// docs/threat-model.md maps each escape class to its case.
package escape
