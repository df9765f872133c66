package serve

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// recordingImages answers the image endpoints with fixed values and
// records what the handlers decoded: these tests are about decoding and
// encoding; the store-backed backend is driven by cmd/kiln's tests with
// the docker CLI and docker-py.
type recordingImages struct {
	calls []string
	prune BuildPruneOptions
	load  []byte
}

var testImages = []ImageSummary{
	{ID: "sha256:aa", RepoTags: []string{"app:1", "app:2", "registry.example.com:5000/team/app:1"}, Labels: map[string]string{"tier": "web", "x": ""}},
	{ID: "sha256:bb", RepoTags: []string{"busybox:latest"}},
}

func (b *recordingImages) Images(context.Context) ([]ImageSummary, error) { return testImages, nil }
func (b *recordingImages) InspectImage(_ context.Context, ref string) (ImageInspect, error) {
	b.calls = append(b.calls, "inspect "+ref)
	if ref == "nope" {
		return ImageInspect{}, NotFound(io.EOF)
	}
	return ImageInspect{ID: "sha256:aa"}, nil
}
func (b *recordingImages) ImageHistory(_ context.Context, ref string) ([]HistoryItem, error) {
	b.calls = append(b.calls, "history "+ref)
	return []HistoryItem{{ID: "sha256:aa"}}, nil
}
func (b *recordingImages) TagImage(_ context.Context, ref, n string) error {
	b.calls = append(b.calls, "tag "+ref+" "+n)
	return nil
}
func (b *recordingImages) RemoveImage(_ context.Context, ref string, force, noPrune bool) ([]DeleteItem, error) {
	b.calls = append(b.calls, "rmi "+ref)
	if !force {
		return nil, Conflict(io.EOF)
	}
	return []DeleteItem{{Untagged: ref}, {Deleted: "sha256:aa"}}, nil
}
func (b *recordingImages) SaveImages(_ context.Context, refs []string, w io.Writer) error {
	b.calls = append(b.calls, "save "+strings.Join(refs, ","))
	_, err := w.Write([]byte("TAR"))
	return err
}
func (b *recordingImages) LoadImages(_ context.Context, r io.Reader) ([]string, error) {
	var err error
	b.load, err = io.ReadAll(r)
	return []string{"app:1"}, err
}
func (b *recordingImages) PruneBuildCache(_ context.Context, opts BuildPruneOptions) (BuildPruneReport, error) {
	b.prune = opts
	return BuildPruneReport{SpaceReclaimed: 42}, nil
}
func (b *recordingImages) DiskUsage(context.Context) (DiskUsage, error) {
	return DiskUsage{LayersSize: 7}, nil
}

func TestImageRoutes(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(s))
		zw.Close()
		return b.Bytes()
	}
	for _, tc := range []struct {
		method, path string
		body         []byte
		code         int
		want         string // a substring of the answer
		call         string // what the backend was asked, if anything
	}{
		{"GET", "/v1.41/images/json", nil, 200, `"Id":"sha256:bb"`, ""},
		{"GET", "/images/registry.example.com:5000/team/app:1/json", nil, 200, `"Id":"sha256:aa"`, "inspect registry.example.com:5000/team/app:1"},
		{"GET", "/images/nope/json", nil, 404, `"message"`, "inspect nope"},
		{"GET", "/images/sha256:aa/history", nil, 200, `"Id":"sha256:aa"`, "history sha256:aa"},
		{"POST", "/images/app:1/tag?repo=team/app&tag=2", nil, 201, "", "tag app:1 team/app:2"},
		{"POST", "/images/app:1/tag?repo=team/app", nil, 201, "", "tag app:1 team/app"},
		{"POST", "/images/app:1/tag?repo=team/app:3&tag=2", nil, 400, "give one", ""},
		{"POST", "/images/app:1/tag?tag=2", nil, 400, "repo", ""},
		{"POST", "/images/app:1/tag?repo=app@sha256:aa", nil, 400, "digest", ""},
		{"DELETE", "/images/app:1", nil, 409, `"message"`, "rmi app:1"},
		{"DELETE", "/images/team/app:1?force=1", nil, 200, `[{"Untagged":"team/app:1"},{"Deleted":"sha256:aa"}]`, "rmi team/app:1"},
		{"GET", "/images/team/app:1/get", nil, 200, "TAR", "save team/app:1"},
		{"GET", "/images/get?names=a&names=b:2", nil, 200, "TAR", "save a,b:2"},
		{"GET", "/images/get", nil, 400, "names", ""},
		{"POST", "/images/load?quiet=1", []byte("plain"), 200, `{"stream":"Loaded image: app:1\n"}`, ""},
		{"POST", "/images/load", gz("zipped"), 200, "Loaded image: app:1", ""},
		{"POST", "/build/prune", nil, 200, `{"CachesDeleted":[],"SpaceReclaimed":42}`, ""},
		{"GET", "/system/df", nil, 200, `"LayersSize":7,"Images":[],"Containers":[],"Volumes":[],"BuildCache":[]`, ""},
		{"PUT", "/images/json", nil, 501, "not implemented", ""},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			b := &recordingImages{}
			s := New(staticBackend{})
			s.SetImages(b)
			w := httptest.NewRecorder()
			s.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, bytes.NewReader(tc.body)))
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) {
				t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.path, w.Code, w.Body, tc.code, tc.want)
			}
			if tc.call != "" && (len(b.calls) != 1 || b.calls[0] != tc.call) {
				t.Errorf("the backend was asked %q, want %q", b.calls, tc.call)
			}
			if tc.code >= 400 && tc.call == "" && len(b.calls) > 0 {
				t.Errorf("a refused request reached the backend: %q", b.calls)
			}
		})
	}
	t.Run("save is a tar", func(t *testing.T) {
		s := New(staticBackend{})
		s.SetImages(&recordingImages{})
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest("GET", "/images/app/get", nil))
		if ct := w.Header().Get("Content-Type"); ct != "application/x-tar" {
			t.Errorf("Content-Type %q, want application/x-tar", ct)
		}
	})
	t.Run("load gunzips", func(t *testing.T) {
		b := &recordingImages{}
		s := New(staticBackend{})
		s.SetImages(b)
		s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/images/load", bytes.NewReader(gz("zipped"))))
		if string(b.load) != "zipped" {
			t.Errorf("the backend read %q, want the gunzipped body", b.load)
		}
	})
	t.Run("no backend", func(t *testing.T) {
		w := httptest.NewRecorder()
		New(staticBackend{}).ServeHTTP(w, httptest.NewRequest("GET", "/images/json", nil))
		if w.Code != http.StatusNotImplemented {
			t.Errorf("GET /images/json without SetImages: %d, want 501", w.Code)
		}
	})
}

func TestImageFilters(t *testing.T) {
	enc := func(s string) string { return "filters=" + url.QueryEscape(s) }
	for _, tc := range []struct {
		name, query string
		code        int
		want        [][]string // RepoTags of the images listed
	}{
		{"none", "", 200, [][]string{{"app:1", "app:2", "registry.example.com:5000/team/app:1"}, {"busybox:latest"}}},
		{"reference by repository", enc(`{"reference":{"app":true}}`), 200, [][]string{{"app:1", "app:2"}}},
		{"reference by tag", enc(`{"reference":{"app:2":true}}`), 200, [][]string{{"app:2"}}},
		{"reference pattern", enc(`{"reference":{"*/team/*":true}}`), 200, [][]string{{"registry.example.com:5000/team/app:1"}}},
		{"reference, legacy list", enc(`{"reference":["busy*"]}`), 200, [][]string{{"busybox:latest"}}},
		{"label key", enc(`{"label":{"x":true}}`), 200, [][]string{{"app:1", "app:2", "registry.example.com:5000/team/app:1"}}},
		{"label value", enc(`{"label":{"tier=db":true}}`), 200, nil},
		{"dangling", enc(`{"dangling":{"true":true}}`), 200, nil},
		{"not dangling", enc(`{"dangling":{"false":true}}`), 200, [][]string{{"app:1", "app:2", "registry.example.com:5000/team/app:1"}, {"busybox:latest"}}},
		{"malformed JSON", enc(`{"reference":`), 400, nil},
		{"unknown key", enc(`{"before":{"app:1":true}}`), 400, nil},
		{"bad value shape", enc(`{"reference":"app"}`), 400, nil},
		{"bad dangling", enc(`{"dangling":{"maybe":true}}`), 400, nil},
		{"bad pattern", enc(`{"reference":{"[":true}}`), 400, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(staticBackend{})
			s.SetImages(&recordingImages{})
			w := httptest.NewRecorder()
			s.ServeHTTP(w, httptest.NewRequest("GET", "/images/json?"+tc.query, nil))
			if w.Code != tc.code {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tc.code)
			}
			if tc.code != 200 {
				return
			}
			var got []ImageSummary
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got == nil {
				t.Fatalf("answer %s is not a list: %v", w.Body, err)
			}
			var tags [][]string
			for _, img := range got {
				tags = append(tags, img.RepoTags)
			}
			if !reflect.DeepEqual(tags, tc.want) {
				t.Errorf("listed %q, want %q", tags, tc.want)
			}
		})
	}
}

func TestBuildPruneQuery(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  BuildPruneOptions
		err   string
	}{
		{"", BuildPruneOptions{}, ""},
		{"all=1&keep-storage=1000", BuildPruneOptions{All: true, KeepStorage: 1000}, ""},
		{"filters=" + url.QueryEscape(`{"until":{"24h":true}}`), BuildPruneOptions{Until: 24 * time.Hour}, ""},
		{"filters=" + url.QueryEscape(`{"unused-for":["7d"]}`), BuildPruneOptions{Until: 7 * 24 * time.Hour}, ""},
		{"filters=" + url.QueryEscape(`{"until":{"-1h":true}}`), BuildPruneOptions{}, "until"},
		{"filters=" + url.QueryEscape(`{"type":{"regular":true}}`), BuildPruneOptions{}, "invalid filter 'type'"},
		{"keep-storage=-1", BuildPruneOptions{}, "keep-storage"},
		{"keep-storage=1GB", BuildPruneOptions{}, "keep-storage"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			got, err := buildPruneQuery(q)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestPruneWaitsForScratch: a prune does not run while a request holds
// the store's scratch space (a build unpacking its context), and gives
// up when its client goes away.
func TestPruneWaitsForScratch(t *testing.T) {
	b := &recordingImages{}
	s := New(staticBackend{})
	s.SetImages(b)
	release := s.HoldScratch()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("POST", "/build/prune?all=1", nil).WithContext(ctx))
	if w.Code == http.StatusOK || b.prune.All {
		t.Errorf("prune ran while the scratch space was held: %d %s", w.Code, w.Body)
	}
	release()
	w = httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("POST", "/build/prune?all=1", nil))
	if w.Code != http.StatusOK || !b.prune.All {
		t.Errorf("prune after the scratch space was released: %d %s", w.Code, w.Body)
	}
}
