package serve

import (
	"context"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// openAPIDoc is the OpenAPI document of the endpoints kiln serve answers.
const openAPIDoc = "../docs/api.openapi.yaml"

// allRoutes is a server with every optional part of it set up.
func allRoutes(t *testing.T) []string {
	t.Helper()
	s := New(staticBackend{})
	s.SetBuilder(func(context.Context, BuildRequest, io.Writer) (string, error) { return "", nil }, BuildOptions{})
	return s.Routes()
}

// openAPIOperations reads the document's "METHOD /path" operations.
func openAPIOperations(t *testing.T) (ops []string, doc map[string]any) {
	t.Helper()
	b, err := os.ReadFile(openAPIDoc)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s is not YAML: %v", openAPIDoc, err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("%s: openapi %q, want 3.x", openAPIDoc, doc["openapi"])
	}
	paths, ok := doc["paths"].(map[string]any)
	if !ok || len(paths) == 0 {
		t.Fatalf("%s has no paths", openAPIDoc)
	}
	for p, item := range paths {
		for method := range item.(map[string]any) {
			if httpMethods[method] {
				ops = append(ops, strings.ToUpper(method)+" "+p)
			}
		}
	}
	slices.Sort(ops)
	return ops, doc
}

var httpMethods = map[string]bool{"get": true, "put": true, "post": true, "delete": true, "options": true, "head": true, "patch": true, "trace": true}

// pathParams makes paths comparable whatever their parameters are named:
// a route's {name:*} and the document's {name} are both {}.
var pathParams = regexp.MustCompile(`\{[^}]*\}`)

func normalize(op string) string { return pathParams.ReplaceAllString(op, "{}") }

// TestOpenAPIDocumentsRoutes: every route kiln serve registers is in
// docs/api.openapi.yaml, and every operation there is registered, so
// that the document cannot drift from the server.
func TestOpenAPIDocumentsRoutes(t *testing.T) {
	routes := allRoutes(t)
	ops, _ := openAPIOperations(t)
	documented, registered := map[string]bool{}, map[string]bool{}
	for _, op := range ops {
		documented[normalize(op)] = true
	}
	for _, r := range routes {
		registered[normalize(r)] = true
		if !documented[normalize(r)] {
			t.Errorf("kiln serve answers %s, which %s does not document: add it there (and to docs/api.md)", r, openAPIDoc)
		}
	}
	for _, op := range ops {
		if !registered[normalize(op)] {
			t.Errorf("%s documents %s, which kiln serve does not answer: remove it from the document, or register it", openAPIDoc, op)
		}
	}
}

// TestOpenAPIWellFormed: each operation has responses, declares the
// parameters of its path, every $ref points at something there, and no
// key lacks its value. (openapi-spec-validator, pip's, checks the rest.)
func TestOpenAPIWellFormed(t *testing.T) {
	ops, doc := openAPIOperations(t)
	paths := doc["paths"].(map[string]any)
	for _, op := range ops {
		method, p, _ := strings.Cut(op, " ")
		o := paths[p].(map[string]any)[strings.ToLower(method)].(map[string]any)
		if r, _ := o["responses"].(map[string]any); len(r) == 0 {
			t.Errorf("%s has no responses", op)
		}
		if s, _ := o["summary"].(string); s == "" {
			t.Errorf("%s has no summary", op)
		}
		declared := map[string]bool{}
		params, _ := o["parameters"].([]any)
		for _, prm := range params {
			m := prm.(map[string]any)
			if ref, ok := m["$ref"].(string); ok {
				m, _ = resolve(doc, ref).(map[string]any)
			}
			if m["in"] == "path" {
				declared[m["name"].(string)] = true
			}
		}
		for _, name := range pathParams.FindAllString(p, -1) {
			if name = strings.Trim(name, "{}"); !declared[name] {
				t.Errorf("%s does not declare its path parameter %s", op, name)
			}
		}
	}
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if e == nil {
					// a comma in a {…} description splits it into a key
					// without a value
					t.Errorf("%s/%s has no value (quote text with commas)", at, k)
				}
				if k == "$ref" {
					if ref, _ := e.(string); resolve(doc, ref) == nil {
						t.Errorf("%s: $ref %v leads nowhere", at, e)
					}
					continue
				}
				walk(e, at+"/"+k)
			}
		case []any:
			for _, e := range v {
				walk(e, at)
			}
		}
	}
	walk(doc, "")
}

// resolve follows a local $ref ("#/components/schemas/X"); nil if it
// leads nowhere.
func resolve(doc map[string]any, ref string) any {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	var v any = doc
	for _, k := range strings.Split(rest, "/") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		if v, ok = m[k]; !ok {
			return nil
		}
	}
	return v
}

// TestRoutes: Routes gives back the paths as handle was given them, in
// OpenAPI's form.
func TestRoutes(t *testing.T) {
	s := &Server{}
	for _, path := range []string{"/_ping", "/build/prune", "/images/{name:*}/json", "/images/{name:*}", "/a.b/{x}/{y:*}"} {
		s.handle("GET", path, nil)
	}
	want := []string{"GET /_ping", "GET /build/prune", "GET /images/{name}/json", "GET /images/{name}", "GET /a.b/{x}/{y}"}
	if got := s.Routes(); !slices.Equal(got, want) {
		t.Errorf("Routes() = %q, want %q", got, want)
	}
}
