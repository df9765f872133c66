package copier

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
)

// Permission bits in chmod(1) octal form; Go's fs.FileMode keeps setuid,
// setgid and sticky elsewhere, so the copier works in these.
const (
	bitSetuid = 0o4000
	bitSetgid = 0o2000
	bitSticky = 0o1000
	bitsUser  = 0o4700 // u: rwx and setuid
	bitsGroup = 0o2070 // g: rwx and setgid
	bitsOther = 0o0007
	bitsAll   = 0o6777 // a: everything but sticky, as in BSD setmode
	bitsExec  = 0o0111
)

// chmodSpec is a parsed --chmod. BuildKit accepts an octal number up to
// 07777 (dockerfile2llb dispatchCopy → CopyInfo.Mode) and otherwise a
// chmod(1) symbolic mode (→ ModeStr, applied by tonistiigi/dchapes-mode,
// a port of BSD setmode(3), with umask 0).
type chmodSpec struct {
	octal    bool
	mode     uint32    // octal mode, with setuid/setgid/sticky
	symbolic []modeCmd // symbolic mode, applied in order
}

// parseChmod parses a --chmod value; "" means no --chmod.
func parseChmod(s string) (*chmodSpec, error) {
	if s == "" {
		return nil, nil
	}
	if n, err := strconv.ParseUint(s, 8, 32); err == nil {
		if n > 0o7777 {
			return nil, errBadOctal(s)
		}
		return &chmodSpec{octal: true, mode: uint32(n)}, nil
	}
	if s[0] >= '0' && s[0] <= '9' {
		// Numeric-looking but not octal: BuildKit reports it as such.
		return nil, errBadOctal(s)
	}
	cmds, err := parseSymbolicMode(s)
	if err != nil {
		return nil, fmt.Errorf("invalid chmod parameter %q: %w", s, err)
	}
	return &chmodSpec{symbolic: cmds}, nil
}

func errBadOctal(s string) error {
	return fmt.Errorf("invalid chmod parameter: '%v'. it should be octal string and between 0 and 07777", s)
}

// apply returns the chmod(1) bits (07777) a copied entry gets, from the
// mode of its source.
func (c *chmodSpec) apply(src fs.FileMode) uint32 {
	if c.octal {
		return c.mode
	}
	return applySymbolic(c.symbolic, toBits(src), src.IsDir())
}

// parentPerm is the mode of a directory the copy creates as a parent of
// its destination. BuildKit passes an octal --chmod to fsutil's MkdirAll,
// whose os.Chmod keeps only the rwx bits; a symbolic one leaves 0755.
func (c *chmodSpec) parentPerm() uint32 {
	if c != nil && c.octal {
		return c.mode & 0o777
	}
	return 0o755
}

// toBits converts a Go file mode to chmod(1) bits.
func toBits(m fs.FileMode) uint32 {
	b := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		b |= bitSetuid
	}
	if m&fs.ModeSetgid != 0 {
		b |= bitSetgid
	}
	if m&fs.ModeSticky != 0 {
		b |= bitSticky
	}
	return b
}

// modeCmd is one step of a symbolic mode. Steps are the BSD setmode(3)
// ones: set bits, clear bits, set execute bits conditionally ('X'), or copy
// one class's rwx bits onto others ('u', 'g', 'o').
type modeCmd struct {
	op   byte   // '+', '-', 'X', or the class copied from: 'u', 'g', 'o'
	bits uint32 // bits affected
	// For copies: the classes written, and whether the copy clears
	// ("-" and "=") and/or sets ("+" and "=") bits there.
	toU, toG, toO bool
	clear, set    bool
}

var errModeSyntax = errors.New("invalid syntax")

// parseSymbolicMode parses comma-separated clauses of the form
// [ugoa]*([-+=]([rwxXst]*|[ugo]))+ the way BSD setmode(3) does with a zero
// umask, quirks included (an empty "who" never touches the sticky bit on
// "=", "o+s" and "o+t" are ignored, "X" also applies to directories).
func parseSymbolicMode(s string) ([]modeCmd, error) {
	var cmds []modeCmd
	add := func(op byte, who, arg uint32) {
		switch op {
		case '=':
			clr := who
			if who == 0 {
				clr = bitsAll
			}
			cmds = append(cmds, modeCmd{op: '-', bits: clr})
			op = '+'
			fallthrough
		case '+', '-', 'X':
			bits := arg
			if who != 0 {
				bits = who & arg
			}
			cmds = append(cmds, modeCmd{op: op, bits: bits})
		}
	}
	addCopy := func(from byte, who uint32, op byte) {
		c := modeCmd{op: from, bits: 0o7777}
		if who != 0 {
			c.toU, c.toG, c.toO = who&0o400 != 0, who&0o040 != 0, who&0o004 != 0
			c.bits = ^uint32(0)
		} else {
			c.toU, c.toG, c.toO = true, true, true
		}
		c.set = op == '+' || op == '='
		c.clear = op == '-' || op == '='
		cmds = append(cmds, c)
	}

	for {
		var who uint32
	who:
		for ; len(s) > 0; s = s[1:] {
			switch s[0] {
			case 'a':
				who |= bitsAll
			case 'u':
				who |= bitsUser
			case 'g':
				who |= bitsGroup
			case 'o':
				who |= bitsOther
			default:
				break who
			}
		}
		if len(s) == 0 {
			return nil, errModeSyntax
		}
		for {
			// One operator and its permissions; operators chain ("u+r-w").
			op := s[0]
			s = s[1:]
			if op != '+' && op != '-' && op != '=' {
				return nil, errModeSyntax
			}
			equalDone := false
			who &^= bitSticky
			var perm, permX uint32
		perms:
			for ; ; s = s[1:] {
				var b byte
				if len(s) > 0 {
					b = s[0]
				}
				switch b {
				case 'r':
					perm |= 0o444
				case 'w':
					perm |= 0o222
				case 'x':
					perm |= bitsExec
				case 'X':
					if op == '-' {
						perm |= bitsExec
					} else {
						permX = bitsExec
					}
				case 's':
					// Set-id bits mean nothing for "other".
					if who == 0 || who&^bitsOther != 0 {
						perm |= bitSetuid | bitSetgid
					}
				case 't':
					if who == 0 || who&^bitsOther != 0 {
						who |= bitSticky
						perm |= bitSticky
					}
				case 'u', 'g', 'o':
					if perm != 0 {
						add(op, who, perm)
						perm = 0
					}
					if op == '=' {
						equalDone = true
					}
					if permX != 0 {
						add('X', who, permX)
						permX = 0
					}
					addCopy(b, who, op)
				default:
					if perm != 0 || (op == '=' && !equalDone) {
						add(op, who, perm)
					}
					if permX != 0 {
						add('X', who, permX)
					}
					break perms
				}
			}
			if len(s) == 0 {
				return cmds, nil
			}
			if s[0] == ',' {
				s = s[1:]
				break
			}
		}
	}
}

// applySymbolic applies parsed steps to chmod(1) bits.
func applySymbolic(cmds []modeCmd, orig uint32, isDir bool) uint32 {
	m := orig
	for _, c := range cmds {
		switch c.op {
		case '+':
			m |= c.bits
		case '-':
			m &^= c.bits
		case 'X':
			// Decided on the original mode, like setmode(3).
			if orig&bitsExec != 0 || isDir {
				m |= c.bits
			}
		case 'u', 'g', 'o':
			var v uint32
			switch c.op {
			case 'u':
				v = m & 0o700 >> 6
			case 'g':
				v = m & 0o070 >> 3
			default:
				v = m & 0o007
			}
			if c.clear {
				clr := v
				if c.set {
					clr = 0o7
				}
				m = copyClasses(m, c, clr, false)
			}
			if c.set {
				m = copyClasses(m, c, v, true)
			}
		}
	}
	return m & 0o7777
}

// copyClasses sets (or clears) the rwx value v in each class c writes,
// limited to c.bits.
func copyClasses(m uint32, c modeCmd, v uint32, set bool) uint32 {
	for _, t := range []struct {
		on    bool
		shift uint
	}{{c.toU, 6}, {c.toG, 3}, {c.toO, 0}} {
		if !t.on {
			continue
		}
		if set {
			m |= v << t.shift & c.bits
		} else {
			m &^= v << t.shift & c.bits
		}
	}
	return m
}
