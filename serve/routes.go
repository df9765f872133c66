package serve

import (
	"strings"
)

// Routes lists the endpoints the server answers, as "METHOD /path" with
// the path in the Engine API's OpenAPI form (/images/{name}/json), in the
// order they were added. docs/api.openapi.yaml documents each of them; a
// test holds the two together.
func (s *Server) Routes() []string {
	out := make([]string, 0, len(s.routes))
	for _, rt := range s.routes {
		out = append(out, rt.method+" "+routePath(rt))
	}
	return out
}

// routePath reads a route's path back from the pattern handle compiled
// it to (kept there rather than in a field so that handle stays as it
// is): each capture group is the next of the route's names, {name:*}
// becoming plain {name} as in OpenAPI, and the rest is QuoteMeta'd text.
func routePath(rt route) string {
	p := strings.TrimSuffix(strings.TrimPrefix(rt.pattern.String(), "^"), "$")
	var b strings.Builder
	names := rt.names
	for i := 0; i < len(p); i++ {
		switch {
		case strings.HasPrefix(p[i:], "([^/]+)"), strings.HasPrefix(p[i:], "(.+)"):
			b.WriteString("{" + names[0] + "}")
			names = names[1:]
			i += strings.IndexByte(p[i:], ')')
		case p[i] == '\\' && i+1 < len(p):
			i++
			b.WriteByte(p[i])
		default:
			b.WriteByte(p[i])
		}
	}
	return b.String()
}
