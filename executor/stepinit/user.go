package stepinit

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/userdb"
)

// identity is a resolved USER: the credentials a RUN command starts with.
type identity struct {
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups, primary GID first
	// Home is the passwd entry's home directory, "/" without one. runc
	// sets HOME from it when the step's environment has none, and RUN
	// steps rely on that (~/.cache, ~/.npmrc).
	Home string
}

// maxUserFile bounds what we read of /etc/passwd and /etc/group: they come
// from the image, and a hostile image must not make the sandbox allocate
// without limit. BuildKit uses the same bound.
const maxUserFile = userdb.MaxFileBytes

var (
	errNoPasswdEntries = errors.New("no matching entries in passwd file")
	errNoGroupEntries  = errors.New("no matching entries in group file")
)

// resolveUser turns a USER string into credentials the way BuildKit does
// (oci.GetUser on top of moby/sys/user), because images are written against
// that behaviour:
//   - "" means root, and a missing or unreadable passwd file is not an error;
//   - "uid:gid" with both parts numeric (or "root") skips the files entirely;
//   - a numeric uid without a passwd entry is accepted with gid 0;
//   - an explicit group replaces the primary gid and disables supplementary
//     groups; otherwise every group that lists the user name is added.
//
// passwd and group may be nil when the files do not exist.
func resolveUser(spec string, passwd, group io.Reader) (identity, error) {
	var users [][]string
	if passwd != nil {
		var err error
		if users, err = parseColonFile(passwd, 7); err != nil {
			if spec != "" {
				return identity{}, fmt.Errorf("reading /etc/passwd: %w", err)
			}
			users = nil
		}
	}
	id, err := resolveIDs(spec, users, group)
	if err != nil {
		return identity{}, err
	}
	if id.Home == "" {
		// runc looks the home up by uid even when BuildKit resolved
		// "uid:gid" without the files.
		id.Home = "/"
		for _, u := range users {
			if uid, err := strconv.ParseUint(u[2], 10, 32); err == nil && uint32(uid) == id.UID {
				id.Home = u[5]
				break
			}
		}
	}
	return id, nil
}

func resolveIDs(spec string, users [][]string, group io.Reader) (identity, error) {
	isDefault := spec == ""
	if isDefault {
		spec = "0"
	}
	if uid, gid, ok := parseUIDGID(spec); ok {
		return identity{UID: uid, GID: gid, Groups: []uint32{gid}}, nil
	}

	userArg, groupArg := splitUserSpec(spec)
	uidArg, isUID, err := parseID(userArg)
	if err != nil {
		return identity{}, fmt.Errorf("parsing user %q: %w", userArg, err)
	}
	gidArg, isGID, err := parseID(groupArg)
	if err != nil {
		return identity{}, fmt.Errorf("parsing group %q: %w", groupArg, err)
	}

	var id identity
	var matchedName string
	for _, u := range users {
		uid, _ := strconv.ParseUint(u[2], 10, 32)
		if (userArg == "" && uid == 0) || (isUID && uint32(uid) == uidArg) || (!isUID && u[0] == userArg) {
			gid, _ := strconv.ParseUint(u[3], 10, 32)
			matchedName, id.UID, id.GID, id.Home = u[0], uint32(uid), uint32(gid), u[5]
			break
		}
	}
	if matchedName == "" && userArg != "" {
		if !isUID {
			return identity{}, fmt.Errorf("unable to find user %s: %w", userArg, errNoPasswdEntries)
		}
		id.UID = uidArg
	}

	var sgids []uint32
	if groupArg != "" || matchedName != "" {
		groups, err := parseColonFile(group, 4)
		if err != nil {
			return identity{}, fmt.Errorf("reading /etc/group: %w", err)
		}
		found := false
		for _, g := range groups {
			gid, _ := strconv.ParseUint(g[2], 10, 32)
			switch {
			case groupArg == "":
				for _, member := range strings.Split(g[3], ",") {
					if member == matchedName {
						sgids = append(sgids, uint32(gid))
						break
					}
				}
			case !found && ((isGID && uint32(gid) == gidArg) || (!isGID && g[0] == groupArg)):
				id.GID, found = uint32(gid), true
			}
		}
		if groupArg != "" && !found {
			if !isGID {
				return identity{}, fmt.Errorf("unable to find group %s: %w", groupArg, errNoGroupEntries)
			}
			id.GID = gidArg
		}
	}

	// Like containerd (and so BuildKit), the primary gid is always in the
	// supplementary list, first.
	id.Groups = []uint32{id.GID}
	for _, g := range sgids {
		if g != id.GID {
			id.Groups = append(id.Groups, g)
		}
	}
	return id, nil
}

// splitUserSpec splits "user:group"; like moby/sys/user, fields after the
// second colon are ignored.
func splitUserSpec(spec string) (user, group string) {
	fields := strings.Split(spec, ":")
	user = fields[0]
	if len(fields) > 1 {
		group = fields[1]
	}
	return user, group
}

// parseUIDGID is BuildKit's fast path: both parts given and numeric (or
// "root"), so no passwd or group file is consulted.
func parseUIDGID(spec string) (uid, gid uint32, ok bool) {
	u, g, found := strings.Cut(spec, ":")
	if !found {
		return 0, 0, false
	}
	num := func(s string) (uint32, bool) {
		if s == "root" {
			return 0, true
		}
		n, err := strconv.ParseUint(s, 10, 32)
		return uint32(n), err == nil
	}
	uid, okU := num(u)
	gid, okG := num(g)
	return uid, gid, okU && okG
}

// parseID reports whether s is a numeric id. A number that does not fit
// is an error rather than a name: no passwd entry could match it.
func parseID(s string) (uint32, bool, error) {
	if s == "" {
		return 0, false, nil
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false, nil
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > 1<<31-1 {
		return 0, false, fmt.Errorf("id %s out of range", s)
	}
	return uint32(n), true, nil
}

// parseColonFile reads a passwd- or group-format file into lines of exactly
// n fields (missing trailing fields are empty). A nil reader yields no lines.
func parseColonFile(r io.Reader, n int) ([][]string, error) {
	if r == nil {
		return nil, nil
	}
	data, err := io.ReadAll(io.LimitReader(r, maxUserFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxUserFile {
		return nil, fmt.Errorf("file exceeds %d bytes", maxUserFile)
	}
	return userdb.Parse(data, n, true), nil
}
