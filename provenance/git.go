package provenance

import (
	"net/url"
	"strings"
)

// Git is the checkout a build context lies in.
type Git struct {
	// Commit is HEAD's commit id (hex).
	Commit string
	// Ref is the branch HEAD points to ("refs/heads/main"); "" when
	// detached.
	Ref string
	// Remote is the URL of the branch's remote (else origin's, else the
	// first remote's), without credentials; "" when there is none.
	Remote string
}

// URI names the checkout in resolvedDependencies the way BuildKit names
// a git source: REMOTE#REF, or REMOTE alone when HEAD is detached.
func (g *Git) URI() string {
	if g.Remote == "" {
		return ""
	}
	if g.Ref != "" {
		return g.Remote + "#" + g.Ref
	}
	return g.Remote
}

func (g *Git) digestAlgorithm() string {
	if len(g.Commit) == 64 {
		return "sha256" // a repository in git's SHA-256 object format
	}
	return "sha1"
}

// isHex reports whether s is a full object id: 40 (SHA-1) or 64 (SHA-256)
// lowercase hex digits.
func isHex(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// cleanRemote drops credentials from a remote URL (https://user:token@host/…
// is a common way to clone in CI) and refuses anything that is not one
// printable line.
func cleanRemote(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 2048 {
		return ""
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return ""
		}
	}
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && u.Host != "" {
		u.User = nil
		return u.String()
	}
	// scp-like syntax: user@host:path. The user of an ssh remote is no
	// secret ("git@"), but keep the rule simple: no userinfo at all.
	if at := strings.Index(s, "@"); at >= 0 && strings.Contains(s[at:], ":") && !strings.Contains(s[:at], "/") {
		return s[at+1:]
	}
	return s
}

// parseRemotes reads the url of each [remote "NAME"] section and the
// remote of each [branch "NAME"] section of a git config file. Only the
// plain forms kiln needs are understood; anything else is skipped.
func parseRemotes(config string) (remotes map[string]string, order []string, branchRemote map[string]string) {
	remotes = map[string]string{}
	branchRemote = map[string]string{}
	var section, sub string
	for _, line := range strings.Split(config, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				section = ""
				continue
			}
			head := strings.TrimSpace(line[1:end])
			section, sub = head, ""
			if sp := strings.IndexByte(head, ' '); sp >= 0 {
				section = strings.ToLower(head[:sp])
				sub = strings.Trim(strings.TrimSpace(head[sp+1:]), `"`)
			} else {
				section = strings.ToLower(head)
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.Trim(strings.TrimSpace(v), `"`)
		switch {
		case section == "remote" && k == "url" && sub != "":
			if _, dup := remotes[sub]; !dup {
				order = append(order, sub)
				remotes[sub] = v
			}
		case section == "branch" && k == "remote" && sub != "":
			branchRemote[sub] = v
		}
	}
	return remotes, order, branchRemote
}
