package copier

import (
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/userdb"
	"github.com/kiln-build/kiln/rooted"
)

// owner is a numeric uid/gid pair.
type owner struct{ uid, gid int }

// idSpec is one side of "user:group": a name to look up or a number.
type idSpec struct {
	byName bool
	name   string
	id     int
}

// parseUserSpec splits a --chown value or a USER the way BuildKit's
// llb.WithUser does: "root" and decimal numbers are ids, anything else is
// a name; an empty group after ":" counts as no group.
func parseUserSpec(s string) (user, group *idSpec) {
	u, g, hasGroup := strings.Cut(s, ":")
	user = parseID(u)
	if hasGroup && g != "" {
		group = parseID(g)
	}
	return user, group
}

func parseID(s string) *idSpec {
	if s == "root" {
		return &idSpec{}
	}
	// BuildKit parses with strconv.ParseInt(s, 10, 32), so "+5" is 5.
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		return &idSpec{id: int(n)}
	}
	return &idSpec{byName: true, name: s}
}

// resolveOwner turns a --chown value or a USER into ids, reading the
// destination root's /etc/passwd and /etc/group like BuildKit's readUser
// (solver/llbsolver/ops/user_linux.go):
//   - "name": uid and primary gid from passwd;
//   - a number n alone: n:n (not the passwd primary group);
//   - a group, by name from /etc/group or by number, replaces the gid.
//
// A name that is not found, or a missing passwd/group file, is not an
// error in BuildKit: the id stays 0. kiln keeps that, so that it builds the
// same image. An empty spec returns nil: no ownership change requested.
func resolveOwner(root *rooted.Root, spec string) (*owner, error) {
	if spec == "" {
		return nil, nil
	}
	user, group := parseUserSpec(spec)
	var o owner
	if user.byName {
		// An empty user name (":group") is looked up as a name too, as in
		// BuildKit, and matches nothing in a sane passwd.
		if _, err := lookupFile(root, "/etc/passwd", 7, false, func(f []string) bool {
			if f[0] != user.name {
				return false
			}
			o.uid, o.gid = atoiField(f, 2), atoiField(f, 3)
			return true
		}); err != nil {
			return nil, err
		}
	} else {
		o.uid, o.gid = user.id, user.id
	}
	if group != nil {
		if group.byName {
			if _, err := lookupFile(root, "/etc/group", 4, true, func(f []string) bool {
				if f[0] != group.name {
					return false
				}
				o.gid = atoiField(f, 2)
				return true
			}); err != nil {
				return nil, err
			}
		} else {
			o.gid = group.id
		}
	}
	return &o, nil
}

// atoiField reads a numeric field; like moby/sys/user, a malformed number
// reads as 0.
func atoiField(f []string, i int) int {
	if i >= len(f) {
		return 0
	}
	n, _ := strconv.Atoi(f[i])
	return n
}

// lookupFile scans a passwd-format file of the root (n fields a line)
// for the first line accepted by match. A missing file is "not found", not
// an error; a FIFO or device there is an error, never a hang.
func lookupFile(root *rooted.Root, name string, n int, skipComments bool, match func(fields []string) bool) (bool, error) {
	data, err := userdb.ReadFile(root, name)
	if err != nil {
		return false, err
	}
	for _, f := range userdb.Parse(data, n, skipComments) {
		if match(f) {
			return true, nil
		}
	}
	return false, nil
}
